//! The `emporium` command as an operator uses it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use platform::testing::Sandbox;
use support::{emporium_command, output_text};

#[tokio::test]
async fn version_and_help() {
    let sandbox = Sandbox::new().await;
    let out = emporium_command(&sandbox).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(output_text(&out).0.trim(), format!("emporium {}", env!("CARGO_PKG_VERSION")));
    let out = emporium_command(&sandbox).args(["serve", "--help"]).output().unwrap();
    let help = output_text(&out).0;
    for flag in ["--bind", "--data-dir", "--services", "--demo"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[tokio::test]
async fn config_shows_the_effective_values_with_secrets_masked() {
    let sandbox = Sandbox::new().await;
    std::fs::write(sandbox.dir.path().join("emporium.toml"), "[outbox]\nbatch_size = 42\n").unwrap();
    let out = emporium_command(&sandbox)
        .arg("config")
        .env("EMPORIUM_DATABASE_URL", "postgres://shop:hunter2@db.internal/shop")
        .env("EMPORIUM_REDIS_URL", "redis://:redispass@cache:6379")
        .env("EMPORIUM_BIND", "0.0.0.0:9090")
        .output()
        .unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("bind = \"0.0.0.0:9090\""), "{stdout}");
    assert!(stdout.contains("batch_size = 42"), "the file in the working folder is read: {stdout}");
    assert!(stdout.contains("postgres://shop:****@db.internal/shop"), "{stdout}");
    assert!(!stdout.contains("hunter2") && !stdout.contains("redispass"), "{stdout}");
}

#[tokio::test]
async fn a_bad_value_stops_start_up_naming_its_key() {
    let sandbox = Sandbox::new().await;
    for (var, value, key) in [
        ("EMPORIUM_BIND", "localhost-ish", "bind"),
        ("EMPORIUM_DATABASE_MAX_CONNECTIONS", "many", "database.max_connections"),
        ("EMPORIUM_NATS_URL", "http://nats", "nats.url"),
        ("EMPORIUM_SERVICES", "catalog,warehouse", "services"),
    ] {
        let out = emporium_command(&sandbox).arg("serve").env(var, value).output().unwrap();
        let (_, stderr) = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(key), "{var}={value} should name `{key}`: {stderr}");
    }
    let out = emporium_command(&sandbox).args(["--config", "missing.toml", "config"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(output_text(&out).1.contains("missing.toml"));
}

#[tokio::test]
async fn migrate_is_safe_twice_and_from_two_processes_at_once() {
    let sandbox = Sandbox::new().await;
    let children: Vec<_> = (0..2)
        .map(|_| emporium_command(&sandbox).arg("migrate").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    let mut applied = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = output_text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        applied += stdout.lines().filter(|l| l.starts_with("applied ")).count();
    }
    let expected: usize = emporium::services()
        .iter()
        .map(|s| platform::migrate::PLATFORM.sqlite.len() + s.migrations.sqlite.len())
        .sum();
    assert_eq!(applied, expected, "each service's migrations applied once");
    let out = emporium_command(&sandbox).arg("migrate").output().unwrap();
    assert!(out.status.success());
    assert_eq!(output_text(&out).0.trim(), "migrations: nothing to apply");
}

/// Starts `emporium serve` for `services` on a free port; returns the child
/// (its stderr piped) and the address it printed.
/// A process of some of the services, given the shop's public address as
/// such a process must be.
fn serve(sandbox: &Sandbox, services: &str) -> (std::process::Child, String) {
    spawn_server(
        emporium_command(sandbox)
            .args(["serve", "--bind", "127.0.0.1:0", "--services", services])
            .env("EMPORIUM_PUBLIC_URL", "http://shop.test")
            .stderr(Stdio::piped()),
    )
}

/// Spawns a prepared `serve` command and reads the address it prints.
fn spawn_server(cmd: &mut Command) -> (std::process::Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_owned();
    (child, addr)
}

#[tokio::test]
async fn serve_answers_and_stops_cleanly_on_sigterm() {
    let sandbox = Sandbox::new().await;
    let (child, addr) = serve(&sandbox, "auth,catalog,search");

    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("database.auth") && response.contains("database.catalog") && response.contains("database.search"));
    assert!(!response.contains("database.orders"), "only the chosen services run: {response}");

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit on SIGTERM: {stderr}");
    assert!(stderr.contains("outbox relay flushed and stopped"), "{stderr}");
    // Log lines are JSON; the access line carries the request id, status and path.
    let request_line = stderr
        .lines()
        .find(|l| l.contains("request finished"))
        .unwrap_or_else(|| panic!("no request log in {stderr}"));
    let json: serde_json::Value = serde_json::from_str(request_line).unwrap();
    assert!(json["request_id"].as_str().unwrap().starts_with("req_"), "{json}");
    assert_eq!((json["status"].as_u64(), json["path"].as_str(), json["level"].as_str()), (Some(200), Some("/readyz"), Some("INFO")));
    assert!(json["timestamp"].as_str().unwrap().ends_with('Z'), "{json}");
}

/// Sends one HTTP/1.1 request and returns (status line, body).
fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (String, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http_with(addr, method, path, &headers, body)
}

/// A request with its own headers; a connection the server drops (it
/// crashed) answers an empty status line.
fn http_with(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

#[tokio::test]
async fn the_first_admin_is_created_from_the_command_line_while_the_server_runs() {
    let sandbox = Sandbox::new().await;
    let (mut server, addr) = serve(&sandbox, "auth");
    let logs = server.stderr.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut BufReader::new(logs), &mut std::io::sink()));

    let mut create = emporium_command(&sandbox)
        .args(["users", "create", "--email", "root@example.com", "--role", "admin", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    create.stdin.take().unwrap().write_all(b"an operator passphrase\n").unwrap();
    let out = create.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", output_text(&out));
    assert!(output_text(&out).0.starts_with("created usr_"), "{}", output_text(&out).0);

    let again = emporium_command(&sandbox)
        .args(["users", "create", "--email", "ROOT@example.com", "--role", "admin"])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(output_text(&again).1.contains("exists"), "{}", output_text(&again).1);
    let generated = emporium_command(&sandbox).args(["users", "create", "--email", "ops@example.com", "--role", "support"]).output().unwrap();
    assert!(output_text(&generated).0.contains("password: "), "a password is generated and shown once");
    let bad_role = emporium_command(&sandbox).args(["users", "create", "--email", "x@example.com", "--role", "wizard"]).output().unwrap();
    assert_eq!(bad_role.status.code(), Some(2));

    let (status, body) = http(&addr, "POST", "/api/v1/auth/login", None, Some(r#"{"email":"root@example.com","password":"an operator passphrase"}"#));
    assert!(status.contains("200"), "{status} {body}");
    let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["access_token"].as_str().unwrap().to_owned();
    let (status, body) = http(&addr, "GET", "/api/v1/admin/users", Some(&token), None);
    assert!(status.contains("200"), "{status} {body}");

    let rotated = emporium_command(&sandbox).args(["keys", "rotate"]).output().unwrap();
    assert!(rotated.status.success() && output_text(&rotated).0.starts_with("new signing key"), "{:?}", output_text(&rotated));
    let (status, _) = http(&addr, "GET", "/api/v1/me", Some(&token), None);
    assert!(status.contains("200"), "tokens from the old key still verify: {status}");

    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(server.wait().unwrap().success());
}

#[tokio::test]
async fn products_import_and_export_from_the_command_line() {
    let sandbox = Sandbox::new().await;
    let file = sandbox.dir.path().join("shopify.csv");
    std::fs::write(&file, include_bytes!("../../catalog/tests/fixtures/shopify_products.csv")).unwrap();
    let out = emporium_command(&sandbox).args(["import", "products"]).arg(&file).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("13 rows: 4 products created, 0 updated"), "{stdout}");
    assert!(stdout.contains("line 5 (ocean-blue-shirt) [Variant Price]: `fifty` is not an amount in USD"), "{stdout}");
    assert!(stdout.contains("7 rows skipped"), "{stdout}");

    let again = emporium_command(&sandbox).args(["import", "products"]).arg(&file).output().unwrap();
    assert!(output_text(&again).0.contains("0 products created, 4 updated"), "{}", output_text(&again).0);

    let exported = sandbox.dir.path().join("out.csv");
    let out = emporium_command(&sandbox).args(["export", "products"]).arg(&exported).output().unwrap();
    assert!(out.status.success(), "{:?}", output_text(&out));
    assert!(output_text(&out).0.contains("exported 4 products"));
    let csv = std::fs::read_to_string(&exported).unwrap();
    assert!(csv.starts_with("Handle,Title,Body (HTML),Vendor"), "{csv}");
    assert!(csv.contains("ocean-blue-shirt,Ocean Blue Shirt"), "{csv}");

    let out = emporium_command(&sandbox).args(["import", "products", "missing.csv"]).output().unwrap();
    assert!(!out.status.success());
    assert!(output_text(&out).1.contains("missing.csv"), "{:?}", output_text(&out));
    let out = emporium_command(&sandbox).args(["export", "products", "x.csv", "--currency", "dollars"]).output().unwrap();
    assert!(!out.status.success());
}

/// A guest's cart in the demo shop, ready to pay: its id and secret.
fn demo_cart(addr: &str, sku: &str) -> (String, String) {
    let (_, cart) = http(addr, "POST", "/api/v1/carts", None, None);
    let cart: serde_json::Value = serde_json::from_str(&cart).unwrap();
    let (id, secret) = (cart["id"].as_str().unwrap().to_owned(), cart["secret"].as_str().unwrap().to_owned());
    let h = [("X-Cart-Secret", secret.as_str())];
    let steps = [
        ("POST", "items", format!(r#"{{"sku":"{sku}","quantity":1}}"#)),
        ("PUT", "email", r#"{"email":"guest@example.com"}"#.to_owned()),
        ("PUT", "shipping-address", r#"{"name":"G","line1":"1 Main St","city":"Austin","region":"TX","postal_code":"78701","country":"US"}"#.to_owned()),
    ];
    for (method, step, body) in steps {
        let (status, body) = http_with(addr, method, &format!("/api/v1/carts/{id}/{step}"), &h, Some(&body));
        assert!(status.contains("200"), "{step}: {status} {body}");
    }
    let (_, options) = http_with(addr, "GET", &format!("/api/v1/carts/{id}/shipping-options"), &h, None);
    let options: serde_json::Value = serde_json::from_str(&options).unwrap();
    let method = options["data"][0]["id"].as_str().unwrap();
    let (status, body) = http_with(addr, "PUT", &format!("/api/v1/carts/{id}/shipping-method"), &h, Some(&format!(r#"{{"id":"{method}"}}"#)));
    assert!(status.contains("200"), "{status} {body}");
    (id, secret)
}

fn serve_demo(sandbox: &Sandbox, fault: Option<&str>) -> (std::process::Child, String) {
    spawn_server(
        emporium_command(sandbox)
            .args(["serve", "--demo", "--bind", "127.0.0.1:0"])
            .env("EMPORIUM_ORDERS_RECONCILE_AFTER_SECS", "1")
            .env("EMPORIUM_FAULT_POINT", fault.unwrap_or(""))
            .stderr(Stdio::null()),
    )
}

#[tokio::test]
async fn a_checkout_cut_short_by_a_crash_is_finished_after_restart() {
    let sandbox = Sandbox::new().await;
    // Where a crash can strike between the steps of a checkout.
    for (i, point) in ["checkout.placed", "checkout.authorised", "checkout.paid"].into_iter().enumerate() {
        let (mut server, addr) = serve_demo(&sandbox, Some(point));
        let (_, products) = http(&addr, "GET", "/api/v1/products?limit=1&sort=oldest", None, None);
        let products: serde_json::Value = serde_json::from_str(&products).unwrap();
        let sku = products["data"][0]["variants"][0]["sku"].as_str().unwrap().to_owned();
        let (cart, secret) = demo_cart(&addr, &sku);
        let h = [("X-Cart-Secret", secret.as_str()), ("Idempotency-Key", "pay-once")];
        let (status, _) = http_with(&addr, "POST", &format!("/api/v1/carts/{cart}/checkout"), &h, Some(r#"{"payment":{"provider":"test","token":"tok_visa"}}"#));
        assert_eq!(status, "", "{point}: the server died mid-checkout");
        assert!(!server.wait().unwrap().success());

        let (mut server, addr) = serve_demo(&sandbox, None);
        // The demo's staff sign in, whichever start made them.
        for email in ["admin@example.com", "orders@example.com"] {
            let (status, body) = http(&addr, "POST", "/api/v1/auth/login", None, Some(&format!(r#"{{"email":"{email}","password":"emporium-demo"}}"#)));
            assert!(status.contains("200"), "{email}: {status} {body}");
        }
        let (_, view) = http_with(&addr, "GET", &format!("/api/v1/carts/{cart}"), &h[..1], None);
        let order = serde_json::from_str::<serde_json::Value>(&view).unwrap()["order_id"].as_str().unwrap().to_owned();
        let orders = sandbox.db("orders", &[]).await;
        let catalog = sandbox.db("catalog", &[]).await;
        let mut settled = (String::new(), String::new(), String::new());
        for _ in 0..100 {
            let status: String = platform::on_db!(&orders, pool => sqlx::query_scalar("SELECT status FROM orders WHERE id = $1").bind(&order).fetch_one(pool).await).unwrap();
            let stock: String = platform::on_db!(&orders, pool => sqlx::query_scalar("SELECT stock FROM orders WHERE id = $1").bind(&order).fetch_one(pool).await).unwrap();
            let held: String = platform::on_db!(&catalog, pool => sqlx::query_scalar("SELECT state FROM reservations WHERE order_id = $1").bind(&order).fetch_one(pool).await).unwrap();
            settled = (status, stock, held);
            if settled.1 == "committed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(settled, ("paid".into(), "committed".into(), "committed".into()), "{point}");
        let charges: i64 = platform::on_db!(&orders, pool => sqlx::query_scalar("SELECT COUNT(*) FROM test_gateway_charges").fetch_one(pool).await).unwrap();
        assert_eq!(charges, i as i64 + 1, "{point}: charged exactly once per order");
        let again = [("X-Cart-Secret", secret.as_str()), ("Idempotency-Key", "second-click")];
        let (status, body) = http_with(&addr, "POST", &format!("/api/v1/carts/{cart}/checkout"), &again, Some(r#"{"payment":{"provider":"test","token":"tok_visa"}}"#));
        assert!(status.contains("409") && body.contains("order_already_paid"), "another try finds the order paid: {status} {body}");
        orders.close().await;
        catalog.close().await;
        Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
        assert!(server.wait().unwrap().success());
    }
}

#[tokio::test]
async fn the_search_index_is_rebuilt_from_the_command_line_while_the_server_serves() {
    let sandbox = Sandbox::new().await;
    let seeded = emporium_command(&sandbox).args(["seed", "--demo"]).output().unwrap();
    assert!(seeded.status.success(), "{:?}", output_text(&seeded));
    let (mut server, addr) = serve(&sandbox, "auth,catalog,search");
    let logs = server.stderr.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut BufReader::new(logs), &mut std::io::stderr()));
    let count = |addr: &str| {
        let (_, body) = http(addr, "GET", "/api/v1/search?limit=1", None, None);
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["total"].as_u64().unwrap_or(0)
    };
    for _ in 0..100 {
        if count(&addr) == 240 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&addr), 240, "built at start");
    let out = emporium_command(&sandbox).args(["search", "reindex"]).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("indexed 240 products"), "{stdout}");
    for _ in 0..30 {
        assert_eq!(count(&addr), 240, "search keeps answering while the new index is swapped in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let folders = || std::fs::read_dir(sandbox.data_dir().join("search")).unwrap().filter(|e| e.as_ref().unwrap().path().is_dir()).count();
    // The server looks for a new index every 2 s; on a busy machine, give it a while.
    for _ in 0..200 {
        if folders() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(folders(), 1, "the old index is gone once the server switched");
    let out = emporium_command(&sandbox).args(["search", "rebuild-recommendations"]).output().unwrap();
    assert!(out.status.success() && output_text(&out).0.contains("recounted the statistics of 0 orders"), "{:?}", output_text(&out));
    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(server.wait().unwrap().success());
}
