//! The operator's first hour: starting the shop and being told when it is
//! ready, configuration mistakes named with their value, `emporium doctor`,
//! and the long commands' output.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use platform::testing::Sandbox;
use serde_json::Value;

use crate::support::{emporium_command, output_text};

/// A loopback port nothing listens on (bound, then let go).
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server process, stopped when dropped (a failed assertion leaves none behind).
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    /// Starts a prepared `serve` command on `addr`; its logs are kept out of the way.
    fn start(cmd: &mut Command, addr: &str) -> Server {
        let child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        Server { child, addr: addr.to_owned() }
    }

    /// Waits for the line that says the server is ready; returns it.
    fn ready_line(&mut self) -> String {
        let mut stdout = BufReader::new(self.child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        line
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn stop(mut self) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(self.child.wait().unwrap().success(), "stops cleanly");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, String) {
    let response = http.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn json(http: &reqwest::Client, url: &str) -> Value {
    let (status, body) = get(http, url).await;
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Asks `/readyz` until it says ready (connections are refused until the
/// server listens); returns the answers seen before.
async fn until_ready(http: &reqwest::Client, server: &Server) -> Vec<String> {
    let started = Instant::now();
    let mut before = Vec::new();
    loop {
        assert!(started.elapsed() < Duration::from_secs(180), "not ready after 3 minutes: {before:?}");
        match http.get(server.url("/readyz")).send().await {
            Ok(r) if r.status().as_u16() == 200 => return before,
            Ok(r) => before.push(r.text().await.unwrap_or_default()),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Every product of the shop's catalog, by category id (the catalog's own
/// listing, not search), with the leaf categories' ids and slugs.
async fn catalog_by_category(http: &reqwest::Client, catalog: &Server) -> Vec<(String, String, usize)> {
    let tree = json(http, &catalog.url("/api/v1/categories")).await;
    let mut leaves = Vec::new();
    let mut stack: Vec<Value> = tree.as_array().unwrap().clone();
    while let Some(node) = stack.pop() {
        let children = node["children"].as_array().cloned().unwrap_or_default();
        if children.is_empty() {
            leaves.push((node["id"].as_str().unwrap().to_owned(), node["slug"].as_str().unwrap().to_owned()));
        }
        stack.extend(children);
    }
    let mut counts = Vec::new();
    for (id, slug) in leaves {
        let mut n = 0;
        let mut after: Option<String> = None;
        loop {
            let cursor = after.as_ref().map(|c| format!("&starting_after={c}")).unwrap_or_default();
            let page = json(http, &catalog.url(&format!("/api/v1/products?category={id}&limit=100{cursor}"))).await;
            n += page["data"].as_array().unwrap().len();
            match page["next_cursor"].as_str() {
                Some(c) if page["has_more"] == true => after = Some(c.to_owned()),
                _ => break,
            }
        }
        counts.push((id, slug, n));
    }
    counts
}

/// What search (and the storefront's category pages, which list from it)
/// shows for each category is the whole category, right now.
async fn search_shows_everything(http: &reqwest::Client, search: &Server, expected: &[(String, String, usize)], pages: bool) {
    let all = json(http, &search.url("/api/v1/search?limit=1")).await;
    assert_eq!(all["total"], 240, "the whole demo catalog is found: {all}");
    for (id, slug, n) in expected {
        let found = json(http, &search.url(&format!("/api/v1/search?category={id}&limit=1"))).await;
        assert_eq!(found["total"].as_u64(), Some(*n as u64), "category {slug}: {found}");
        if pages {
            let (status, page) = get(http, &search.url(&format!("/categories/{slug}"))).await;
            assert_eq!(status, 200);
            assert!(page.contains(&format!("{n} products")), "the page of {slug} shows all {n}: {page}");
        }
    }
    assert_eq!(expected.iter().map(|(_, _, n)| n).sum::<usize>(), 240);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shop_says_it_is_ready_once_search_holds_the_whole_catalog() {
    let sandbox = Sandbox::new().await;
    let addr = format!("127.0.0.1:{}", dead_port());
    let mut server = Server::start(emporium_command(&sandbox).args(["serve", "--demo", "--bind", &addr]), &addr);
    let http = client();
    let before = until_ready(&http, &server).await;
    // Right when it says ready, every category shows all of its products.
    let expected = catalog_by_category(&http, &server).await;
    search_shows_everything(&http, &server, &expected, true).await;
    // While catching up, /readyz says so in one word; what it waits for
    // (consumers, counts, error text) is for the log only.
    assert!(before.iter().all(|b| b.contains("\"startup\":\"starting\"")), "{before:?}");
    for answer in &before {
        let checks: Value = serde_json::from_str(answer).unwrap();
        for (check, word) in checks["checks"].as_object().unwrap() {
            assert!(["ok", "starting", "unavailable"].contains(&word.as_str().unwrap()), "{check}: {answer}");
        }
    }
    let line = server.ready_line();
    assert!(line.starts_with("Emporium is ready at http://127.0.0.1:"), "{line}");
    server.stop();
}

const SERVICE_TOKEN: &str = "a-service-token-of-at-least-32-characters";

/// A split shop on NATS: auth and catalog, with the demo data, in one
/// process; search processes join it.
struct OnNats {
    sandbox: Sandbox,
    env: [(&'static str, String); 5],
    catalog: Server,
}

impl OnNats {
    /// `None` without NATS (the test says `what` is checked elsewhere).
    async fn start(what: &str) -> Option<OnNats> {
        let Some(nats) = platform::testing::nats_url() else {
            eprintln!("EMPORIUM_TEST_NATS_URL unset: {what} is checked in the run with NATS");
            return None;
        };
        let sandbox = Sandbox::new().await;
        let (stream, prefix) = sandbox.stream();
        let env = [
            ("EMPORIUM_NATS_URL", nats),
            ("EMPORIUM_NATS_STREAM", stream),
            ("EMPORIUM_NATS_SUBJECT_PREFIX", prefix),
            ("EMPORIUM_CATALOG_SERVICE_TOKEN", SERVICE_TOKEN.to_owned()),
            // Every process of the shop has its one public address.
            ("EMPORIUM_PUBLIC_URL", "http://shop.test".to_owned()),
        ];
        let addr = format!("127.0.0.1:{}", dead_port());
        let mut cmd = emporium_command(&sandbox);
        cmd.args(["serve", "--demo", "--services", "auth,catalog", "--bind", &addr]).envs(env.clone());
        let mut catalog = Server::start(&mut cmd, &addr);
        let line = catalog.ready_line();
        assert!(line.contains("ready"), "{line}");
        Some(OnNats { sandbox, env, catalog })
    }

    /// A search process keeping its index under `<data dir>/<dir>`.
    fn search(&self, dir: &str) -> Server {
        let addr = format!("127.0.0.1:{}", dead_port());
        let catalog = &self.catalog.addr;
        let mut cmd = emporium_command(&self.sandbox);
        cmd.args(["serve", "--services", "search", "--bind", &addr])
            .env("EMPORIUM_DATA_DIR", self.sandbox.data_dir().join(dir))
            .env("EMPORIUM_CATALOG_URL", format!("http://{catalog}"))
            .env("EMPORIUM_AUTH_JWKS_URL", format!("http://{catalog}/.well-known/jwks.json"))
            .envs(self.env.clone());
        Server::start(&mut cmd, &addr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_in_a_process_of_its_own_on_nats_is_ready_once_it_holds_the_catalog() {
    let Some(shop) = OnNats::start("search in its own process").await else { return };
    let search = shop.search("search-process");
    let http = client();
    until_ready(&http, &search).await;
    let expected = catalog_by_category(&http, &shop.catalog).await;
    search_shows_everything(&http, &search, &expected, false).await;
    search.stop();
    shop.catalog.stop();
}

/// The hits of `q` on one search process.
async fn hits(http: &reqwest::Client, search: &Server, q: &str) -> u64 {
    json(http, &search.url(&format!("/api/v1/search?q={q}&limit=1"))).await["total"].as_u64().unwrap()
}

/// Two search replicas on one NATS stream, each with its own index: every
/// catalog change reaches both (not one of them), and a replica that was
/// away while the catalog changed rebuilds its index at start and is ready
/// only then. Sales statistics, kept in the shared database, stay once per
/// shop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_search_replica_applies_every_catalog_change_to_its_own_index() {
    let Some(shop) = OnNats::start("search replicas").await else { return };
    let catalog = &shop.catalog;
    let replica = |n: u32| shop.search(&format!("search-{n}"));
    let http = client();
    let (one, two) = (replica(1), replica(2));
    until_ready(&http, &one).await;
    until_ready(&http, &two).await;

    let login = http
        .post(catalog.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(serde_json::json!({"email": "admin@example.com", "password": "emporium-demo"}).to_string())
        .send()
        .await
        .unwrap();
    let login: Value = serde_json::from_str(&login.text().await.unwrap()).unwrap();
    let staff = login["access_token"].as_str().unwrap().to_owned();
    let products = json(&http, &catalog.url("/api/v1/products?limit=8")).await;
    let ids: Vec<String> = products["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect();
    let rename = |id: String, title: String| {
        let request = http.patch(catalog.url(&format!("/api/v1/admin/products/{id}"))).bearer_auth(&staff)
            .header("content-type", "application/json")
            .body(serde_json::json!({"title": title}).to_string());
        async move {
            let response = request.send().await.unwrap();
            assert!(response.status().is_success(), "{}", response.text().await.unwrap());
        }
    };
    let until = |server: &Server, q: &'static str, n: u64| {
        let url = server.url(&format!("/api/v1/search?q={q}&limit=1"));
        let http = http.clone();
        async move {
            let started = Instant::now();
            loop {
                let found: Value = serde_json::from_str(&get(&http, &url).await.1).unwrap();
                if found["total"].as_u64() == Some(n) {
                    return;
                }
                assert!(started.elapsed() < Duration::from_secs(10), "{url}: {n} expected, {found}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // Eight edits: each reaches both indexes.
    for (i, id) in ids.iter().enumerate() {
        rename(id.clone(), format!("Quokka Lantern {i}")).await;
    }
    until(&one, "quokka", 8).await;
    until(&two, "quokka", 8).await;

    // A replica away while the catalog changes has the change once ready again.
    two.stop();
    rename(ids[0].clone(), "Wombat Teapot".into()).await;
    until(&one, "wombat", 1).await;
    let back = shop.search("search-2");
    until_ready(&http, &back).await;
    assert_eq!(hits(&http, &back, "wombat").await, 1, "rebuilt from the catalog before saying ready");
    assert_eq!(hits(&http, &back, "quokka").await, 7);
    // And it follows again.
    rename(ids[1].clone(), "Wombat Kettle".into()).await;
    until(&back, "wombat", 2).await;
    until(&one, "wombat", 2).await;
    back.stop();
    one.stop();
    shop.catalog.stop();
}

#[tokio::test]
async fn configuration_mistakes_are_named_with_their_value() {
    let sandbox = Sandbox::new().await;
    // A host name is a fine address to listen on.
    let mut server = Server::start(
        emporium_command(&sandbox).args(["serve", "--services", "auth,catalog"]).env("EMPORIUM_BIND", "localhost:0").env("EMPORIUM_PUBLIC_URL", "http://shop.test"),
        "",
    );
    let line = server.ready_line();
    assert!(line.starts_with("Emporium is ready at http://127.0.0.1:"), "{line}");
    server.stop();

    for (var, value, key) in [
        ("EMPORIUM_LOG", "loud", "log.filter"),
        ("EMPORIUM_LOG", "info,sqlx=lots", "log.filter"),
        ("EMPORIUM_BIND", "localhost", "bind"),
        ("EMPORIUM_HTTP_MAX_CONNECTIONS", "0", "http.max_connections"),
        ("EMPORIUM_ORDERS_CAPTURE", "later", "orders.capture"),
    ] {
        let out = emporium_command(&sandbox).arg("serve").env(var, value).output().unwrap();
        let (_, stderr) = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        for named in [var, key, &format!("`{value}`")] {
            assert!(stderr.contains(named), "{var}={value} should name {named}: {stderr}");
        }
    }
    let out = emporium_command(&sandbox).args(["serve", "--bind", "localhost"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(output_text(&out).1.contains("--bind") && output_text(&out).1.contains("`localhost`"), "{}", output_text(&out).1);
}

#[tokio::test]
async fn a_busy_port_is_reported_before_anything_is_migrated_or_loaded() {
    let sandbox = Sandbox::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let started = Instant::now();
    let out = emporium_command(&sandbox).args(["serve", "--demo", "--bind", &addr]).output().unwrap();
    let (_, stderr) = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&addr) && stderr.contains("in use") && stderr.contains("--bind"), "{stderr}");
    assert!(!stderr.contains("demo data loaded") && !stderr.contains("migration"), "nothing ran first: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "said at once");
    let databases: Vec<_> =
        std::fs::read_dir(sandbox.data_dir()).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "db")).collect();
    assert!(databases.is_empty(), "no database was created: {databases:?}");
    if let Some(url) = &sandbox.database_url {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let schemas: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name IN ('auth', 'catalog', 'orders')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(schemas, 0, "nothing was migrated");
        let _ = conn.close().await;
    }
    drop(taken);
}

#[tokio::test]
async fn an_unreachable_postgresql_is_named_with_its_address_and_the_cause() {
    let sandbox = Sandbox::new().await;
    let port = dead_port();
    let out = emporium_command(&sandbox).arg("migrate").env("EMPORIUM_DATABASE_URL", format!("postgres://postgres@127.0.0.1:{port}/shop")).output().unwrap();
    let (_, stderr) = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.to_lowercase().contains("connection refused"), "{stderr}");
    assert!(!stderr.contains("timed out"), "{stderr}");
}

/// `emporium doctor`'s lines (stdout), whether it passed, and its stderr.
fn doctor(cmd: &mut Command) -> (Vec<String>, bool, String) {
    let out = cmd.arg("doctor").output().unwrap();
    let (stdout, stderr) = output_text(&out);
    (stdout.lines().map(str::to_owned).collect(), out.status.success(), stderr)
}

fn line_of<'a>(lines: &'a [String], part: &str) -> &'a str {
    lines.iter().find(|l| l.split_whitespace().nth(1).is_some_and(|p| p.trim_end_matches(':') == part))
        .unwrap_or_else(|| panic!("no line for {part}: {lines:#?}"))
}

#[tokio::test]
async fn doctor_passes_a_healthy_shop_and_names_what_is_broken() {
    let sandbox = Sandbox::new().await;
    let migrated = emporium_command(&sandbox).arg("migrate").output().unwrap();
    assert!(migrated.status.success(), "{}", output_text(&migrated).1);
    // As a shop that has run once has it.
    std::fs::create_dir_all(sandbox.data_dir().join("media")).unwrap();
    let (lines, passed, stderr) = doctor(&mut emporium_command(&sandbox));
    assert!(passed, "{lines:#?}\n{stderr}");
    assert!(lines.iter().all(|l| l.starts_with("ok ") || l.starts_with("note ")), "{lines:#?}");
    for part in ["configuration", "bind", "data_dir", "database", "media"] {
        assert!(line_of(&lines, part).starts_with("ok "), "{part}: {lines:#?}");
    }

    let (redis, smtp) = (dead_port(), dead_port());
    let (lines, passed, _) = doctor(
        emporium_command(&sandbox).env("EMPORIUM_REDIS_URL", format!("redis://127.0.0.1:{redis}")).env("EMPORIUM_SMTP_URL", format!("smtp://127.0.0.1:{smtp}")),
    );
    assert!(!passed, "{lines:#?}");
    let line = line_of(&lines, "redis");
    assert!(line.starts_with("FAIL") && line.contains(&format!("127.0.0.1:{redis}")), "{line}");
    assert!(line.to_lowercase().contains("refused") && line.contains("Fix: start Redis") && line.contains("EMPORIUM_REDIS_URL"), "{line}");
    let line = line_of(&lines, "smtp");
    assert!(line.starts_with("FAIL") && line.to_lowercase().contains("refused") && line.contains("EMPORIUM_SMTP_URL"), "{line}");
    assert!(line_of(&lines, "database").starts_with("ok "), "the rest is still checked: {lines:#?}");

    let (lines, passed, _) = doctor(emporium_command(&sandbox).env("EMPORIUM_LOG", "loud"));
    assert!(!passed);
    assert!(line_of(&lines, "configuration").contains("`loud`"), "{lines:#?}");

    // A process of its own for search must be told where the catalog and
    // the keys are, and the shop's public address: the configuration names
    // the first setting missing.
    const TOKEN: &str = "a-service-token-of-at-least-32-characters";
    let (lines, passed, _) = doctor(emporium_command(&sandbox).env("EMPORIUM_SERVICES", "search"));
    assert!(!passed);
    let line = line_of(&lines, "configuration");
    assert!(line.starts_with("FAIL") && line.contains("catalog.url") && line.contains("EMPORIUM_CATALOG_URL"), "{lines:#?}");
    let (lines, _, _) = doctor(emporium_command(&sandbox).env("EMPORIUM_SERVICES", "search").env("EMPORIUM_CATALOG_URL", "http://127.0.0.1:9").env("EMPORIUM_CATALOG_SERVICE_TOKEN", TOKEN));
    let line = line_of(&lines, "configuration");
    assert!(line.starts_with("FAIL") && line.contains("auth.url") && line.contains("auth.jwks_url"), "{lines:#?}");

    let addr = format!("127.0.0.1:{}", dead_port());
    let mut server = Server::start(
        emporium_command(&sandbox)
            .args(["serve", "--services", "auth,catalog", "--bind", &addr])
            .env("EMPORIUM_CATALOG_SERVICE_TOKEN", TOKEN)
            .env("EMPORIUM_PUBLIC_URL", "http://shop.test"),
        &addr,
    );
    server.ready_line();
    let split = |token: &str| {
        let mut cmd = emporium_command(&sandbox);
        cmd.env("EMPORIUM_SERVICES", "search")
            .env("EMPORIUM_BIND", "127.0.0.1:0")
            .env("EMPORIUM_CATALOG_URL", format!("http://{addr}"))
            .env("EMPORIUM_CATALOG_SERVICE_TOKEN", token)
            .env("EMPORIUM_AUTH_JWKS_URL", format!("http://{addr}/.well-known/jwks.json"))
            .env("EMPORIUM_PUBLIC_URL", "http://shop.test");
        cmd
    };
    let (lines, passed, stderr) = doctor(&mut split(TOKEN));
    assert!(passed, "{lines:#?}\n{stderr}");
    assert!(line_of(&lines, "catalog.url").starts_with("ok ") && line_of(&lines, "auth.jwks_url").starts_with("ok "), "{lines:#?}");
    let (lines, passed, _) = doctor(&mut split("another-token-of-at-least-32-characters"));
    assert!(!passed);
    assert!(line_of(&lines, "catalog.url").contains("refused catalog.service_token"), "{lines:#?}");
    server.stop();
}

/// Every file and folder under `dir`, for comparing before and after.
fn tree(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            }
            found.push(entry.path());
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn doctor_changes_nothing_on_a_shop_not_started_yet() {
    let sandbox = Sandbox::new().await;
    let empty = sandbox.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (lines, passed, stderr) = doctor(emporium_command(&sandbox).env("EMPORIUM_DATA_DIR", &empty));
    assert!(passed, "{lines:#?}\n{stderr}");
    assert!(tree(&empty).is_empty(), "doctor made {:?}", tree(&empty));
    assert!(line_of(&lines, "data_dir").starts_with("ok "), "{lines:#?}");
    assert!(line_of(&lines, "media").starts_with("note ") && line_of(&lines, "media").contains("made at first start"), "{lines:#?}");
    if sandbox.database_url.is_none() {
        let line = lines.iter().find(|l| l.contains("database")).unwrap();
        assert!(line.starts_with("note ") && line.contains("not created yet") && line.contains("made at first start"), "{lines:#?}");
    }

    // A data folder not made yet stays unmade.
    let before = tree(sandbox.dir.path());
    let missing = sandbox.dir.path().join("not-yet").join("data");
    let (lines, passed, stderr) = doctor(emporium_command(&sandbox).env("EMPORIUM_DATA_DIR", &missing));
    assert!(passed, "{lines:#?}\n{stderr}");
    assert_eq!(tree(sandbox.dir.path()), before, "nothing made");
    let line = line_of(&lines, "data_dir");
    assert!(line.starts_with("note ") && line.contains("does not exist yet") && line.contains("which is writable"), "{line}");
}

#[tokio::test]
async fn a_malformed_url_setting_never_shows_its_password() {
    let sandbox = Sandbox::new().await;
    for (var, value) in [
        ("EMPORIUM_DATABASE_URL", "postgres//app:S3cret@db/x"),
        ("EMPORIUM_REDIS_URL", "redis:app:S3cret@127.0.0.1"),
        ("EMPORIUM_NATS_URL", "S3cret@127.0.0.1:4222"),
        ("EMPORIUM_SMTP_URL", "smtp//mailer:S3cret@127.0.0.1"),
    ] {
        let (lines, passed, stderr) = doctor(emporium_command(&sandbox).env(var, value));
        assert!(!passed, "{var}: {lines:#?}");
        let line = line_of(&lines, "configuration");
        assert!(line.starts_with("FAIL") && line.contains(var) && line.contains("****"), "{line}");
        let out = emporium_command(&sandbox).arg("serve").env(var, value).output().unwrap();
        let (stdout, serve_err) = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "{serve_err}");
        assert!(serve_err.contains(var), "{serve_err}");
        for said in [&lines.join("\n"), &stderr, &stdout, &serve_err] {
            assert!(!said.contains("S3cret"), "{var}: the password is shown: {said}");
        }
    }
}

#[tokio::test]
async fn doctor_reaches_postgresql_nats_redis_and_s3() {
    let (Some(database), Some(nats), Some(redis)) =
        (platform::testing::database_url(), platform::testing::nats_url(), platform::testing::redis_url())
    else {
        eprintln!("EMPORIUM_TEST_DATABASE_URL, _NATS_URL and _REDIS_URL unset: checked in the run with those servers");
        return;
    };
    let sandbox = Sandbox::new().await;
    let (stream, prefix) = sandbox.stream();
    let s3 = platform::testing::s3_url();
    let bucket = platform::testing::unique("emporium-t").to_lowercase().replace('_', "-");
    if let Some(endpoint) = &s3 {
        platform::testing::create_bucket(endpoint, &bucket);
    }
    let shop = |bucket: &str| {
        let mut cmd = emporium_command(&sandbox);
        cmd.env("EMPORIUM_DATABASE_URL", sandbox.database_url.clone().unwrap_or(database.clone()))
            .env("EMPORIUM_NATS_URL", &nats)
            .env("EMPORIUM_NATS_STREAM", &stream)
            .env("EMPORIUM_NATS_SUBJECT_PREFIX", &prefix)
            .env("EMPORIUM_REDIS_URL", &redis);
        if let Some(endpoint) = &s3 {
            cmd.env("EMPORIUM_MEDIA_STORE", "s3")
                .env("EMPORIUM_MEDIA_S3_BUCKET", bucket)
                .env("EMPORIUM_MEDIA_S3_ENDPOINT", endpoint)
                .env("EMPORIUM_MEDIA_S3_ALLOW_HTTP", "true")
                .env("EMPORIUM_MEDIA_S3_ACCESS_KEY_ID", "test")
                .env("EMPORIUM_MEDIA_S3_SECRET_ACCESS_KEY", "test");
        }
        cmd
    };
    let (lines, passed, stderr) = doctor(&mut shop(&bucket));
    assert!(passed, "{lines:#?}\n{stderr}");
    assert!(line_of(&lines, "database").starts_with("ok ") && line_of(&lines, "database").contains("postgres://"), "{lines:#?}");
    // The stream is only looked at: doctor makes nothing.
    assert!(line_of(&lines, "nats").starts_with("ok ") && line_of(&lines, "nats").contains("made at the first start"), "{lines:#?}");
    assert!(line_of(&lines, "redis").starts_with("ok "), "{lines:#?}");
    let (lines, _, _) = doctor(&mut shop(&bucket));
    assert!(line_of(&lines, "nats").contains("made at the first start"), "{lines:#?}");
    if s3.is_some() {
        assert!(line_of(&lines, "media").contains("S3 bucket"), "{lines:#?}");
        let (lines, passed, _) = doctor(&mut shop("no-such-bucket-for-emporium"));
        assert!(!passed && line_of(&lines, "media").starts_with("FAIL"), "{lines:#?}");
    }
}

#[tokio::test]
async fn long_commands_keep_captured_output_clean_and_counts_readable() {
    let sandbox = Sandbox::new().await;
    let out = emporium_command(&sandbox).args(["seed", "--products", "1200"]).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "added 1,200 products\n");
    let exported = sandbox.dir.path().join("all.csv");
    let out = emporium_command(&sandbox).args(["export", "products"]).arg(&exported).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, format!("exported 1,200 products to {}\n", exported.display()));
    let out = emporium_command(&sandbox).args(["search", "reindex"]).output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("indexed 1,200 products;"), "{stdout}");
    for (what, output) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(!output.contains('\r') && !output.contains('\u{1b}') && !output.contains("/s"), "no progress drawn into captured {what}: {output:?}");
    }
}

#[test]
fn the_licence_and_the_changelog_are_at_the_root() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("license = \"Apache-2.0\""), "the LICENSE file below is the Apache licence");
    let licence = std::fs::read_to_string(root.join("LICENSE")).unwrap();
    assert!(licence.trim_start().starts_with("Apache License") && licence.contains("Version 2.0, January 2004"));
    assert!(licence.contains("END OF TERMS AND CONDITIONS") && licence.len() > 10_000, "the full text");
    let changelog = std::fs::read_to_string(root.join("CHANGELOG.md")).unwrap();
    assert!(changelog.contains("Keep a Changelog") && changelog.contains("## [Unreleased]"), "{changelog}");
    for section in ["### Added", "### Security"] {
        assert!(changelog.contains(section), "{section}");
    }
}
