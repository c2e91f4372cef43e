//! The checkout benchmark: a real release `emporium serve` on a fresh data
//! folder (or fresh PostgreSQL databases), set up over the admin API, then
//! driven by guest shoppers: add to cart, the whole checkout flow, and a
//! flash sale of one SKU with exactly 100 units. The reference, measured in
//! the same invocation, is the checkout's own database work replayed without
//! HTTP or the service (and, on PostgreSQL, as a pgbench script when pgbench
//! is installed). Prints a Markdown section; `--out FILE` appends it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use catalog::Inventory;
use clap::Parser;
use kernel::Envelope;
use kernel::config::{DatabaseConfig, mask_url};
use kernel::id::Uuid;
use platform::db::{Db, DbOptions, Tx, now_ms};
use platform::migrate::{self, PLATFORM};
use platform::{on_db, on_tx};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::{Connection, Row};
use tokio::sync::{Barrier, Semaphore};
use tokio::task::JoinHandle;

#[derive(Parser)]
#[command(about = "Emporium checkout benchmark (see the Benchmarks section of README.md)")]
struct Args {
    /// Seconds of measured load per scenario (after 2 s of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent shoppers (and replaying tasks).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Buyers in the flash sale.
    #[arg(long, default_value_t = 2000)]
    buyers: usize,
    /// `postgres://…/postgres`: a server on which the run creates (and drops)
    /// databases of its own. Without it, SQLite files in a fresh folder.
    #[arg(long, env = "EMPORIUM_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Append the Markdown section to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

const WARMUP: Duration = Duration::from_secs(2);
/// Requests the flash sale has in flight at once, so the client does not run out of sockets.
const IN_FLIGHT: usize = 256;
const FLASH_STOCK: i64 = 100;
const CART_SKUS: [&str; 4] = ["BENCH-CART-1", "BENCH-CART-2", "BENCH-CART-3", "BENCH-CART-4"];
const CHECKOUT_SKU: &str = "BENCH-CHECKOUT";
const FLASH_SKU: &str = "BENCH-FLASH";
const ADMIN_EMAIL: &str = "checkout-admin@example.com";
const ADMIN_PASSWORD: &str = "checkout bench passphrase 7";
const SHIPPING: &str = r#"{"name":"Ground","countries":["US"],"currency":"USD","flat_amount":500,"min_days":2,"max_days":4}"#;
const TAX: &str = r#"{"country":"US","region":"CA","name":"CA","rate_bp":725}"#;
const EMAIL: &str = r#"{"email":"shopper@example.com"}"#;
const ADDRESS: &str = r#"{"name":"Bench Shopper","line1":"1 Market St","city":"San Francisco","region":"CA","postal_code":"94105","country":"US"}"#;
const PAYMENT: &str = r#"{"payment":{"provider":"test","token":"tok_visa"}}"#;

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let place = Place::new(args.database_url.clone())?;
    if let Err(e) = place.create().await {
        place.remove().await;
        return Err(e);
    }
    let result = run(&args, &place).await;
    place.remove().await;
    let (measured, reference) = result?;
    let report = render(&args, &place, &measured, &reference);
    println!("{report}");
    if let Some(out) = &args.out {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(out).map_err(|e| format!("{}: {e}", out.display()))?;
        file.write_all(report.as_bytes()).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    measured.flash.verdict()
}

async fn run(args: &Args, place: &Place) -> Result<(Measured, Reference), String> {
    let bins = std::env::current_exe().map_err(err)?.parent().map(Path::to_path_buf).ok_or("no folder for the binaries")?;
    let server = start_server(&bins, place)?;
    let measured = measure(&server.1, args).await;
    stop(server.0);
    let measured = measured?;
    eprintln!("reference: the checkout's statements, without HTTP or the service");
    Ok((measured, reference(args, place).await?))
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

// Where the run keeps its files and databases

/// A fresh folder, and on PostgreSQL fresh databases `emporium_bench_<pid>_<part>`
/// for the server, the replay and pgbench, dropped at the end.
struct Place {
    dir: PathBuf,
    admin: Option<String>,
}

const PARTS: [&str; 3] = ["server", "replay", "pgbench"];

impl Place {
    fn new(admin: Option<String>) -> Result<Place, String> {
        if let Some(url) = &admin
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(format!("--database-url must be postgres://… (got {})", mask_url(url)));
        }
        Ok(Place { dir: std::env::temp_dir().join(format!("emporium-checkout-{}", std::process::id())), admin })
    }

    fn database(part: &str) -> String {
        format!("emporium_bench_{}_{part}", std::process::id())
    }

    /// The URL `service` uses in `part`: the part's PostgreSQL database (one
    /// schema per service), or a SQLite file of its own.
    fn url(&self, part: &str, service: &str) -> String {
        match &self.admin {
            Some(admin) => with_database(admin, &Self::database(part)),
            None => format!("sqlite://{}", self.dir.join(part).join(format!("{service}.db")).display()),
        }
    }

    async fn create(&self) -> Result<(), String> {
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let Some(admin) = &self.admin else { return Ok(()) };
        let sql = PARTS.iter().flat_map(|p| {
            let name = Self::database(p);
            [format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), format!("CREATE DATABASE {name}")]
        });
        admin_sql(admin, &sql.collect::<Vec<_>>()).await
    }

    async fn remove(&self) {
        if let Some(admin) = &self.admin {
            let sql: Vec<String> = PARTS.iter().map(|p| format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", Self::database(p))).collect();
            if let Err(e) = admin_sql(admin, &sql).await {
                eprintln!("could not drop the bench databases: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn admin_sql(admin: &str, statements: &[String]) -> Result<(), String> {
    let mut conn = sqlx::PgConnection::connect(admin).await.map_err(|e| format!("{}: {e}", mask_url(admin)))?;
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql.as_str())).execute(&mut conn).await.map_err(|e| format!("{sql}: {e}"))?;
    }
    let _ = conn.close().await;
    Ok(())
}

/// `postgres://u@h:5432/postgres?x=y` with another database name.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let start = base.find("://").map_or(0, |i| i + 3);
    let host = base[start..].find('/').map_or(base, |i| &base[..start + i]);
    query.map_or_else(|| format!("{host}/{name}"), |q| format!("{host}/{name}?{q}"))
}

// The server

/// `emporium --config <empty file>`, with no `EMPORIUM_*` setting from the
/// caller's environment: only the run's own database.
fn emporium(bins: &Path, place: &Place) -> Command {
    let mut cmd = Command::new(bins.join("emporium"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("EMPORIUM_") {
            cmd.env_remove(key);
        }
    }
    if place.admin.is_some() {
        cmd.env("EMPORIUM_DATABASE_URL", place.url("server", ""));
    }
    cmd.arg("--config").arg(place.dir.join("emporium.toml"));
    cmd
}

/// Makes the admin, then starts `emporium serve`; returns it and its address.
fn start_server(bins: &Path, place: &Place) -> Result<(Child, String), String> {
    let data = place.dir.join("server");
    std::fs::write(place.dir.join("emporium.toml"), "").map_err(err)?;
    let mut create = emporium(bins, place)
        .args(["users", "create", "--email", ADMIN_EMAIL, "--role", "admin", "--name", "Bench", "--password-stdin", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", bins.join("emporium").display()))?;
    if let Some(mut stdin) = create.stdin.take() {
        stdin.write_all(format!("{ADMIN_PASSWORD}\n").as_bytes()).map_err(err)?;
    }
    let out = create.wait_with_output().map_err(err)?;
    if !out.status.success() {
        return Err(format!("emporium users create: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let mut serve = emporium(bins, place).args(["serve", "--bind", "127.0.0.1:0", "--data-dir"]).arg(&data);
    let mut child = serve.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().map_err(err)?;
    match read_address(&mut child) {
        Ok(addr) => Ok((child, addr)),
        Err(e) => {
            stop(child);
            Err(e)
        }
    }
}

/// The server prints a line ending in `http://<addr>` once it listens.
fn read_address(child: &mut Child) -> Result<String, String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).map_err(err)?;
    let addr = line.trim().rsplit("http://").next().unwrap_or_default().to_owned();
    if addr.is_empty() {
        return Err(format!("emporium did not say where it listens: {line:?}"));
    }
    std::thread::sleep(Duration::from_millis(200));
    Ok(addr)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

// HTTP

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: Arc<str>,
    bearer: Option<Arc<str>>,
}

struct Reply {
    status: u16,
    body: bytes::Bytes,
}

struct Cart {
    id: String,
    secret: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    fn describe(&self, what: &str) -> String {
        let body: String = String::from_utf8_lossy(&self.body).chars().take(300).collect();
        format!("{what}: HTTP {} {body}", self.status)
    }

    fn expect(self, status: u16, what: &str) -> Result<Reply, String> {
        if self.status == status { Ok(self) } else { Err(self.describe(what)) }
    }

    fn text(&self, field: &str) -> Result<String, String> {
        self.json()[field].as_str().map(str::to_owned).ok_or_else(|| self.describe(&format!("no `{field}` in")))
    }
}

impl Api {
    fn new(addr: &str) -> Result<Api, String> {
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(120)).build().map_err(err)?;
        Ok(Api { http, base: format!("http://{addr}").into(), bearer: None })
    }

    async fn send(&self, method: Method, path: &str, body: Option<String>, headers: &[(&str, &str)]) -> Result<Reply, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = response.status().as_u16();
        Ok(Reply { status, body: response.bytes().await.map_err(err)? })
    }

    async fn cart(&self, cart: &Cart, method: Method, rest: &str, body: Option<String>) -> Result<Reply, String> {
        let path = format!("/api/v1/carts/{}{rest}", cart.id);
        self.send(method, &path, body, &[("x-cart-secret", cart.secret.as_str())]).await
    }

    async fn new_cart(&self) -> Result<Cart, String> {
        let reply = self.send(Method::POST, "/api/v1/carts", None, &[]).await?.expect(201, "create cart")?;
        Ok(Cart { id: reply.text("id")?, secret: reply.text("secret")? })
    }
}

/// A guest cart holding one unit of `sku`, with email, address and shipping method.
async fn fill_cart(api: &Api, sku: &str, method: &str) -> Result<Cart, String> {
    let cart = api.new_cart().await?;
    let item = format!(r#"{{"sku":"{sku}","quantity":1}}"#);
    api.cart(&cart, Method::POST, "/items", Some(item)).await?.expect(200, "add item")?;
    api.cart(&cart, Method::PUT, "/email", Some(EMAIL.into())).await?.expect(200, "email")?;
    api.cart(&cart, Method::PUT, "/shipping-address", Some(ADDRESS.into())).await?.expect(200, "address")?;
    let choice = format!(r#"{{"id":"{method}"}}"#);
    api.cart(&cart, Method::PUT, "/shipping-method", Some(choice)).await?.expect(200, "shipping method")?;
    Ok(cart)
}

async fn check_out(api: &Api, cart: &Cart) -> Result<Reply, String> {
    let key = Uuid::now_v7().simple().to_string();
    let headers = [("x-cart-secret", cart.secret.as_str()), ("idempotency-key", key.as_str())];
    api.send(Method::POST, &format!("/api/v1/carts/{}/checkout", cart.id), Some(PAYMENT.into()), &headers).await
}

fn paid(reply: &Reply) -> bool {
    reply.status == 201 && reply.json()["status"] == "paid"
}

/// Signs the admin in; returns an API client carrying its token.
async fn sign_in(api: &Api) -> Result<Api, String> {
    let body = format!(r#"{{"email":"{ADMIN_EMAIL}","password":"{ADMIN_PASSWORD}"}}"#);
    let reply = api.send(Method::POST, "/api/v1/auth/login", Some(body), &[]).await?.expect(200, "login")?;
    Ok(Api { bearer: Some(reply.text("access_token")?.into()), ..api.clone() })
}

/// Shipping, tax, products and stock; returns the shipping method's id.
async fn set_up(admin: &Api) -> Result<String, String> {
    let method = admin.send(Method::POST, "/api/v1/admin/shipping-methods", Some(SHIPPING.into()), &[]).await?;
    let method = method.expect(201, "shipping method")?.text("id")?;
    admin.send(Method::POST, "/api/v1/admin/tax-rates", Some(TAX.into()), &[]).await?.expect(201, "tax rate")?;
    let stock = CART_SKUS.iter().map(|s| (*s, 1000)).chain([(CHECKOUT_SKU, 1_000_000_000), (FLASH_SKU, FLASH_STOCK)]);
    for (sku, on_hand) in stock {
        let product = format!(
            r#"{{"title":"Bench {sku}","status":"active","variants":[{{"sku":"{sku}","prices":{{"USD":1999}},"weight_grams":300}}]}}"#
        );
        admin.send(Method::POST, "/api/v1/admin/products", Some(product), &[]).await?.expect(201, "product")?;
        let count = format!(r#"{{"on_hand":{on_hand}}}"#);
        admin.send(Method::PUT, &format!("/api/v1/admin/inventory/{sku}"), Some(count), &[]).await?.expect(200, "stock")?;
    }
    Ok(method)
}

/// One whole checkout, with the shipping options, before anything is measured.
async fn probe(api: &Api, method: &str) -> Result<(), String> {
    let cart = fill_cart(api, CHECKOUT_SKU, method).await?;
    let options = api.cart(&cart, Method::GET, "/shipping-options", None).await?.expect(200, "shipping options")?;
    if !options.json()["data"].as_array().is_some_and(|d| d.iter().any(|m| m["id"] == method)) {
        return Err(options.describe("the shipping method is not among the options"));
    }
    let reply = check_out(api, &cart).await?;
    if paid(&reply) { Ok(()) } else { Err(reply.describe("probe checkout")) }
}

/// (on hand, reserved) of a SKU over all locations.
async fn stock(admin: &Api, sku: &str) -> Result<(i64, i64), String> {
    let reply = admin.send(Method::GET, &format!("/api/v1/admin/inventory?sku={sku}"), None, &[]).await?.expect(200, "inventory")?;
    let levels = reply.json();
    let levels = levels.as_array().ok_or("inventory: not a list")?;
    Ok(levels.iter().fold((0, 0), |(h, r), l| (h + l["on_hand"].as_i64().unwrap_or(0), r + l["reserved"].as_i64().unwrap_or(0))))
}

// Measuring

#[derive(Clone, Copy)]
struct Window {
    from: Instant,
    until: Instant,
}

impl Window {
    /// Starts now; what starts in the first [`WARMUP`] is not counted.
    fn new(seconds: u64) -> Window {
        let from = Instant::now() + WARMUP;
        Window { from, until: from + Duration::from_secs(seconds) }
    }
}

#[derive(Default)]
struct Samples {
    micros: Vec<u32>,
    errors: usize,
    first_error: Option<String>,
}

impl Samples {
    fn failed(e: String) -> Samples {
        Samples { errors: 1, first_error: Some(e), ..Samples::default() }
    }

    fn record(&mut self, window: &Window, started: Instant, result: Result<Duration, String>) {
        if started < window.from {
            return;
        }
        match result {
            Ok(took) => self.micros.push(took.as_micros().min(u128::from(u32::MAX)) as u32),
            Err(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e);
                }
            }
        }
    }

    fn merge(mut self, other: Samples) -> Samples {
        self.micros.extend(other.micros);
        self.errors += other.errors;
        self.first_error = self.first_error.or(other.first_error);
        self
    }
}

#[derive(Default)]
struct Stats {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
    first_error: Option<String>,
}

fn stats(mut s: Samples, seconds: u64) -> Stats {
    s.micros.sort_unstable();
    Stats {
        per_sec: s.micros.len() as f64 / seconds.max(1) as f64,
        p50_ms: percentile(&s.micros, 50.0),
        p99_ms: percentile(&s.micros, 99.0),
        errors: s.errors,
        first_error: s.first_error,
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

async fn join_all<T>(tasks: Vec<JoinHandle<T>>) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.map_err(err)?);
    }
    Ok(out)
}

struct Measured {
    add: Stats,
    request: Stats,
    flow: Stats,
    flash: Flash,
}

async fn measure(addr: &str, args: &Args) -> Result<Measured, String> {
    let api = Api::new(addr)?;
    let admin = sign_in(&api).await?;
    eprintln!("setting up the shop");
    let method: Arc<str> = set_up(&admin).await?.into();
    probe(&api, &method).await?;
    eprintln!("add to cart");
    let window = Window::new(args.seconds);
    let tasks = (0..args.connections).map(|_| tokio::spawn(add_loop(api.clone(), window))).collect();
    let add = join_all(tasks).await?.into_iter().fold(Samples::default(), Samples::merge);
    eprintln!("full checkout");
    let window = Window::new(args.seconds);
    let tasks = (0..args.connections).map(|_| tokio::spawn(checkout_loop(api.clone(), method.clone(), window))).collect();
    let (mut request, mut flow) = (Samples::default(), Samples::default());
    for (r, f) in join_all(tasks).await? {
        (request, flow) = (request.merge(r), flow.merge(f));
    }
    eprintln!("flash sale: {} buyers, {FLASH_STOCK} units", args.buyers);
    let flash = flash_sale(&api, &admin, &method, args.buyers).await?;
    let s = args.seconds;
    Ok(Measured { add: stats(add, s), request: stats(request, s), flow: stats(flow, s), flash })
}

/// One shopper adding one unit at a time to its own cart, cycling over the SKUs.
async fn add_loop(api: Api, window: Window) -> Samples {
    let cart = match api.new_cart().await {
        Ok(cart) => cart,
        Err(e) => return Samples::failed(e),
    };
    let mut samples = Samples::default();
    let mut n = 0;
    while Instant::now() < window.until {
        let body = format!(r#"{{"sku":"{}","quantity":1}}"#, CART_SKUS[n % CART_SKUS.len()]);
        n += 1;
        let started = Instant::now();
        let reply = api.cart(&cart, Method::POST, "/items", Some(body)).await;
        samples.record(&window, started, reply.and_then(|r| r.expect(200, "add item")).map(|_| started.elapsed()));
    }
    samples
}

/// One shopper checking out cart after cart: (checkout request, whole flow).
async fn checkout_loop(api: Api, method: Arc<str>, window: Window) -> (Samples, Samples) {
    let (mut request, mut flow) = (Samples::default(), Samples::default());
    while Instant::now() < window.until {
        let started = Instant::now();
        let took = one_checkout(&api, &method).await;
        flow.record(&window, started, took.as_ref().map(|_| started.elapsed()).map_err(|e| e.clone()));
        request.record(&window, started, took);
    }
    (request, flow)
}

/// Returns how long the checkout request took.
async fn one_checkout(api: &Api, method: &str) -> Result<Duration, String> {
    let cart = fill_cart(api, CHECKOUT_SKU, method).await?;
    let sent = Instant::now();
    let reply = check_out(api, &cart).await?;
    let took = sent.elapsed();
    if paid(&reply) { Ok(took) } else { Err(reply.describe("checkout")) }
}

// The flash sale

#[derive(Default)]
struct Flash {
    buyers: usize,
    paid: usize,
    out_of_stock: usize,
    failed: usize,
    first_failure: Option<String>,
    seconds: f64,
    p99_ms: f64,
    on_hand: i64,
    reserved: i64,
}

enum Outcome {
    Paid,
    OutOfStock,
    Failed(String),
}

/// What one buyer saw, and when its checkout request went and came back.
struct Buy {
    outcome: Outcome,
    sent: Option<(Instant, Instant)>,
}

impl Flash {
    fn expected_paid(&self) -> usize {
        self.buyers.min(FLASH_STOCK as usize)
    }

    fn oversold(&self) -> bool {
        self.paid as i64 > FLASH_STOCK || self.on_hand < 0 || self.on_hand + self.paid as i64 != FLASH_STOCK
    }

    fn verdict(&self) -> Result<(), String> {
        if self.paid == self.expected_paid() && !self.oversold() && self.reserved == 0 {
            return Ok(());
        }
        Err(format!(
            "flash sale: {} paid (want {}), on hand {} and reserved {} after; oversold: {}",
            self.paid,
            self.expected_paid(),
            self.on_hand,
            self.reserved,
            self.oversold()
        ))
    }
}

/// Every buyer prepares a cart, waits for all the others, then checks out.
async fn flash_sale(api: &Api, admin: &Api, method: &Arc<str>, buyers: usize) -> Result<Flash, String> {
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let barrier = Arc::new(Barrier::new(buyers));
    let tasks = (0..buyers).map(|_| tokio::spawn(buyer(api.clone(), method.clone(), gate.clone(), barrier.clone()))).collect();
    let buys = join_all(tasks).await?;
    let (on_hand, reserved) = stock(admin, FLASH_SKU).await?;
    let mut flash = Flash { buyers, on_hand, reserved, ..Flash::default() };
    let mut micros = Vec::new();
    let mut span: Option<(Instant, Instant)> = None;
    for buy in buys {
        match buy.outcome {
            Outcome::Paid => flash.paid += 1,
            Outcome::OutOfStock => flash.out_of_stock += 1,
            Outcome::Failed(e) => {
                flash.failed += 1;
                flash.first_failure = flash.first_failure.or(Some(e));
            }
        }
        if let Some((start, end)) = buy.sent {
            micros.push((end - start).as_micros().min(u128::from(u32::MAX)) as u32);
            span = Some(span.map_or((start, end), |(a, b)| (a.min(start), b.max(end))));
        }
    }
    micros.sort_unstable();
    flash.p99_ms = percentile(&micros, 99.0);
    flash.seconds = span.map_or(0.0, |(a, b)| (b - a).as_secs_f64());
    Ok(flash)
}

async fn buyer(api: Api, method: Arc<str>, gate: Arc<Semaphore>, barrier: Arc<Barrier>) -> Buy {
    let prepared = match gate.acquire().await {
        Ok(_permit) => fill_cart(&api, FLASH_SKU, &method).await,
        Err(e) => Err(e.to_string()),
    };
    // Everyone reaches the barrier, prepared or not, or the others would wait forever.
    barrier.wait().await;
    let cart = match prepared {
        Ok(cart) => cart,
        Err(e) => return Buy { outcome: Outcome::Failed(format!("preparing the cart: {e}")), sent: None },
    };
    let Ok(_permit) = gate.acquire().await else {
        return Buy { outcome: Outcome::Failed("semaphore closed".into()), sent: None };
    };
    let start = Instant::now();
    let reply = check_out(&api, &cart).await;
    let sent = Some((start, Instant::now()));
    let outcome = match reply {
        Ok(r) if paid(&r) => Outcome::Paid,
        Ok(r) if r.status == 409 && r.json()["error"]["code"] == "out_of_stock" => Outcome::OutOfStock,
        Ok(r) => Outcome::Failed(r.describe("checkout")),
        Err(e) => Outcome::Failed(e),
    };
    Buy { outcome, sent }
}

// The reference: the checkout's database work without HTTP or the service

/// One value bound to a replayed statement (spelled as a literal in the pgbench script).
#[derive(Clone)]
enum Arg {
    Text(String),
    /// pgbench only: an expression, e.g. `('ord_' || :n)`.
    Raw(String),
    Int(i64),
    Bool(bool),
    NullText,
    NullInt,
    /// The current time (a `TIMESTAMPTZ` / RFC 3339 text column).
    Now,
    /// The number the transaction's last `Fetch::Number` statement returned.
    Number,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fetch {
    No,
    Rows,
    Number,
}

struct Step {
    sql: &'static str,
    args: Vec<Arg>,
    fetch: Fetch,
    /// It must touch exactly one row (the conditional updates).
    must: bool,
}

/// Statements in one transaction of one service's database, or one autocommitted statement.
struct Unit {
    orders: bool,
    transaction: bool,
    steps: Vec<Step>,
}

fn step(sql: &'static str, args: Vec<Arg>) -> Step {
    Step { sql, args, fetch: Fetch::No, must: false }
}

impl Step {
    fn rows(mut self) -> Step {
        self.fetch = Fetch::Rows;
        self
    }
    fn number(mut self) -> Step {
        self.fetch = Fetch::Number;
        self
    }
    fn must(mut self) -> Step {
        self.must = true;
        self
    }
}

fn text(s: &str) -> Arg {
    Arg::Text(s.to_owned())
}

// The statements, as catalog/src/store.rs, orders/src/store.rs, orders/src/gateway.rs and platform/src/outbox.rs write them.
const INSERT_CART: &str = "INSERT INTO carts (id, secret_hash, user_id, currency, status, created_ms, updated_ms) VALUES ($1, $2, $3, $4, 'open', $5, $5)";
const RESERVATION_STATE: &str = "SELECT state, expires_at_ms FROM reservations WHERE order_id = $1";
const INSERT_RESERVATION: &str = "INSERT INTO reservations (order_id, state, expires_at_ms, created_at) VALUES ($1, 'held', $2, $3) ON CONFLICT (order_id) DO NOTHING";
const LOCATION_ORDER: &str = "SELECT id FROM stock_locations ORDER BY is_default DESC, name, id";
const STOCK_RULES: &str = "SELECT track_inventory, allow_backorder, low_stock_threshold FROM variants WHERE sku = $1";
const HOLD: &str = "UPDATE inventory_levels SET reserved = reserved + $1 WHERE sku = $2 AND location_id = $3 AND on_hand - reserved >= $1 RETURNING on_hand, reserved";
const INSERT_RESERVATION_LINE: &str = "INSERT INTO reservation_lines (order_id, sku, location_id, quantity) VALUES ($1, $2, $3, $4)";
const AVAILABLE: &str = "SELECT CAST(SUM(on_hand - reserved) AS BIGINT) FROM inventory_levels WHERE sku = $1";
const OUTBOX: &str = "INSERT INTO outbox (id, event_type, payload, created_at) VALUES ($1, $2, $3, $4)";
const NEXT_NUMBER: &str = "UPDATE counters SET value = value + 1 WHERE name = 'order_number' RETURNING value";
const CLOSE_CART: &str = "UPDATE carts SET status = 'ordered', order_id = $1, updated_ms = $2 WHERE id = $3 AND status = 'open'";
const INSERT_ORDER: &str = "INSERT INTO orders (id, number, cart_id, user_id, email, lookup_hash, status, currency, subtotal, discount_total, shipping_total, tax_total, total, prices_include_tax, shipping_address, billing_address, shipping_method, discount_id, discount_code, customer_key, capture_mode, attempt, stock, captured, refunded, placed_ms, paid_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)";
const INSERT_LINE: &str = "INSERT INTO order_lines (order_id, line_no, sku, product_id, variant_id, title, variant_title, unit_price, quantity, discount, tax, total) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
const INSERT_PAYMENT: &str = "INSERT INTO payments (id, order_id, attempt, provider, token, status, amount, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $7)";
const TIMELINE: &str = "INSERT INTO order_timeline (id, order_id, at_ms, kind, actor, data) VALUES ($1, $2, $3, $4, $5, $6)";
const CHARGE: &str = "INSERT INTO test_gateway_charges (reference, idempotency_key, token, amount, currency, status, captured, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (idempotency_key) DO NOTHING";
const SETTLE_PAYMENT: &str = "UPDATE payments SET provider_ref = COALESCE($1, provider_ref), status = $2, captured = $3, failure_code = $4, failure_message = $5, next_action_url = $6, token = CASE WHEN $7 THEN NULL ELSE token END, updated_ms = $8 WHERE id = $9";
const MARK_PAID: &str = "UPDATE orders SET status = 'paid', captured = $1, paid_ms = $2, updated_ms = $2 WHERE id = $3 AND status = 'pending_payment'";
const SETTLE_RESERVATION: &str = "UPDATE reservations SET state = $1 WHERE order_id = $2 AND state = 'held'";
const RESERVATION_LINES: &str = "SELECT sku, location_id, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku";
const SHIP: &str = "UPDATE inventory_levels SET on_hand = on_hand - $1, reserved = reserved - $1 WHERE sku = $2 AND location_id = $3 AND reserved >= $1 AND ($4 OR on_hand >= $1) RETURNING on_hand, reserved";
const LEDGER: &str = "INSERT INTO inventory_ledger (id, sku, location_id, delta, on_hand_after, reason, actor_id, reference, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const SET_STOCK: &str = "UPDATE orders SET stock = $1 WHERE id = $2 AND attempt = $3";

/// Tables of the statements above, qualified with their schema in the pgbench script.
const TABLES: [&str; 14] = [
    "carts", "reservations", "stock_locations", "variants", "inventory_levels", "reservation_lines", "outbox", "counters",
    "orders", "order_lines", "payments", "order_timeline", "test_gateway_charges", "inventory_ledger",
];

/// Ids made fresh per checkout (the replay loop) or per pgbench transaction.
#[derive(Clone, Copy)]
enum Mode {
    Live,
    Pgbench,
}

impl Mode {
    fn id(self, kind: &str) -> Arg {
        match self {
            Mode::Live => Arg::Text(format!("{kind}_{}", Uuid::now_v7().simple())),
            Mode::Pgbench => Arg::Raw(format!("('{kind}_' || :n)")),
        }
    }
}

struct Ids {
    mode: Mode,
    sku: Arg,
    cart: Arg,
    order: Arg,
    payment: Arg,
    charge: Arg,
    now: Arg,
}

/// A guest checkout of one unit at 19.99 + 5.00 shipping + 7.25 % tax = 26.80.
const SUBTOTAL: i64 = 1999;
const SHIPPING_TOTAL: i64 = 500;
const TAX_TOTAL: i64 = 181;
const TOTAL: i64 = 2680;

/// Every statement of one checkout, in its transactions, as `Orders::checkout`
/// runs them: the cart the flow made, reserve, create_order, the test
/// gateway's charge, apply_outcome (paid), the catalog's commit and the stock mark.
fn checkout_units(sku: &str, mode: Mode) -> Vec<Unit> {
    let ids = Ids {
        mode,
        sku: text(sku),
        cart: mode.id("cart"),
        order: mode.id("ord"),
        payment: mode.id("pay"),
        charge: mode.id("tch"),
        now: Arg::Int(now_ms()),
    };
    let cart = step(INSERT_CART, vec![ids.cart.clone(), text(&"5".repeat(64)), Arg::NullText, text("USD"), ids.now.clone()]);
    let charge = step(CHARGE, vec![ids.charge.clone(), ids.payment.clone(), text("tok_visa"), Arg::Int(TOTAL), text("USD"), text("succeeded"), Arg::Int(TOTAL), ids.now.clone()]);
    let set_stock = step(SET_STOCK, vec![text("committed"), ids.order.clone(), Arg::Int(1)]);
    vec![
        Unit { orders: true, transaction: false, steps: vec![cart] },
        Unit { orders: false, transaction: true, steps: reserve_steps(&ids) },
        Unit { orders: true, transaction: true, steps: order_steps(&ids) },
        Unit { orders: true, transaction: false, steps: vec![charge.must()] },
        Unit { orders: true, transaction: true, steps: paid_steps(&ids) },
        Unit { orders: false, transaction: true, steps: commit_steps(&ids) },
        Unit { orders: true, transaction: true, steps: vec![set_stock] },
    ]
}

fn outbox(ids: &Ids, n: u8, kind: &str, data: Value) -> Step {
    let aggregate = match &ids.order {
        Arg::Text(id) => id.clone(),
        _ => "ord_pgbench".to_owned(),
    };
    let payload = serde_json::to_string(&Envelope::new(kind, aggregate, data)).unwrap_or_default();
    step(OUTBOX, vec![ids.mode.id(&format!("evt{n}")), text(kind), Arg::Text(payload), Arg::Now])
}

fn stock_event(ids: &Ids, n: u8, sku: &str) -> Step {
    outbox(ids, n, "inventory.changed", json!({"sku": sku, "location": "loc_default", "on_hand": 999_999_999, "reserved": 1, "available": 999_999_998}))
}

fn lines_json(sku: &str) -> Value {
    json!([{"sku": sku, "product_id": "prod_bench", "title": "Bench product", "variant_title": "Default", "quantity": 1, "unit_price": SUBTOTAL, "total": SUBTOTAL + TAX_TOTAL}])
}

fn reserve_steps(ids: &Ids) -> Vec<Step> {
    let (o, s, loc) = (&ids.order, &ids.sku, text("loc_default"));
    let sku = match s { Arg::Text(t) => t.as_str(), _ => "" };
    vec![
        step(RESERVATION_STATE, vec![o.clone()]).rows(),
        step(INSERT_RESERVATION, vec![o.clone(), Arg::Int(now_ms() + 900_000), Arg::Now]).must(),
        step(LOCATION_ORDER, vec![]).rows(),
        step(STOCK_RULES, vec![s.clone()]).rows(),
        step(HOLD, vec![Arg::Int(1), s.clone(), loc.clone()]).rows().must(),
        step(INSERT_RESERVATION_LINE, vec![o.clone(), s.clone(), loc, Arg::Int(1)]),
        step(AVAILABLE, vec![s.clone()]).rows(),
        stock_event(ids, 1, sku),
    ]
}

fn order_steps(ids: &Ids) -> Vec<Step> {
    let (o, now) = (&ids.order, &ids.now);
    let sku = match &ids.sku { Arg::Text(t) => t.clone(), _ => String::new() };
    let method = json!({"id": "ship_bench", "name": "Ground", "amount": SHIPPING_TOTAL, "min_days": 2, "max_days": 4}).to_string();
    let email = text("shopper@example.com");
    let order = vec![
        o.clone(), Arg::Number, ids.cart.clone(), Arg::NullText, email.clone(), text(&"7".repeat(64)), text("pending_payment"), text("USD"),
        Arg::Int(SUBTOTAL), Arg::Int(0), Arg::Int(SHIPPING_TOTAL), Arg::Int(TAX_TOTAL), Arg::Int(TOTAL), Arg::Bool(false),
        text(ADDRESS), text(ADDRESS), Arg::Text(method), Arg::NullText, Arg::NullText, email.clone(), text("on_authorise"),
        Arg::Int(1), text("held"), Arg::Int(0), Arg::Int(0), now.clone(), Arg::NullInt, now.clone(),
    ];
    let line = vec![
        o.clone(), Arg::Int(1), ids.sku.clone(), text("prod_bench"), text("var_bench"), text("Bench product"), text("Default"),
        Arg::Int(SUBTOTAL), Arg::Int(1), Arg::Int(0), Arg::Int(TAX_TOTAL), Arg::Int(SUBTOTAL + TAX_TOTAL),
    ];
    let placed = json!({"order_id": "ord_bench", "number": 1001, "email": "shopper@example.com", "user_id": null, "currency": "USD",
        "subtotal": SUBTOTAL, "discount": 0, "shipping": SHIPPING_TOTAL, "tax": TAX_TOTAL, "total": TOTAL,
        "lookup_token": "7".repeat(64), "lines": lines_json(&sku), "shipping_address": serde_json::from_str::<Value>(ADDRESS).unwrap_or_default()});
    vec![
        step(NEXT_NUMBER, vec![]).number(),
        step(CLOSE_CART, vec![o.clone(), now.clone(), ids.cart.clone()]).must(),
        step(INSERT_ORDER, order),
        step(INSERT_LINE, line),
        step(INSERT_PAYMENT, vec![ids.payment.clone(), o.clone(), Arg::Int(1), text("test"), text("tok_visa"), Arg::Int(TOTAL), now.clone()]),
        step(TIMELINE, vec![ids.mode.id("tl1"), o.clone(), now.clone(), text("placed"), Arg::NullText, text(r#"{"number":1001,"total":2680}"#)]),
        outbox(ids, 2, "order.placed", placed),
    ]
}

fn paid_steps(ids: &Ids) -> Vec<Step> {
    let (o, now) = (&ids.order, &ids.now);
    let sku = match &ids.sku { Arg::Text(t) => t.clone(), _ => String::new() };
    let settle = vec![
        ids.charge.clone(), text("captured"), Arg::Int(TOTAL), Arg::NullText, Arg::NullText, Arg::NullText, Arg::Bool(true), now.clone(),
        ids.payment.clone(),
    ];
    let data = json!({"order_id": "ord_bench", "number": 1001, "email": "shopper@example.com", "user_id": null, "total": TOTAL,
        "currency": "USD", "captured": TOTAL, "lines": lines_json(&sku)});
    vec![
        step(SETTLE_PAYMENT, settle),
        step(MARK_PAID, vec![Arg::Int(TOTAL), now.clone(), o.clone()]).must(),
        step(TIMELINE, vec![ids.mode.id("tl2"), o.clone(), now.clone(), text("paid"), Arg::NullText, text(r#"{"payment_id":"pay_bench","captured":2680}"#)]),
        outbox(ids, 3, "order.paid", data),
    ]
}

fn commit_steps(ids: &Ids) -> Vec<Step> {
    let (o, s, loc) = (&ids.order, &ids.sku, text("loc_default"));
    let sku = match s { Arg::Text(t) => t.as_str(), _ => "" };
    let ledger = vec![ids.mode.id("inv"), s.clone(), loc.clone(), Arg::Int(-1), Arg::Number, text("sold"), Arg::NullText, o.clone(), Arg::Now];
    vec![
        step(RESERVATION_STATE, vec![o.clone()]).rows(),
        step(SETTLE_RESERVATION, vec![text("committed"), o.clone()]).must(),
        step(RESERVATION_LINES, vec![o.clone()]).rows(),
        step(STOCK_RULES, vec![s.clone()]).rows(),
        step(SHIP, vec![Arg::Int(1), s.clone(), loc, Arg::Bool(false)]).number().must(),
        step(LEDGER, ledger),
        step(AVAILABLE, vec![s.clone()]).rows(),
        stock_event(ids, 4, sku),
    ]
}

/// Binds a step's values to its statement (for either database).
macro_rules! bound {
    ($step:expr, $number:expr) => {{
        let mut q = sqlx::query($step.sql);
        for a in &$step.args {
            q = match a {
                Arg::Text(s) | Arg::Raw(s) => q.bind(s.as_str()),
                Arg::Int(i) => q.bind(*i),
                Arg::Bool(b) => q.bind(*b),
                Arg::NullText => q.bind(None::<&str>),
                Arg::NullInt => q.bind(None::<i64>),
                Arg::Now => q.bind(sqlx::types::time::OffsetDateTime::now_utc()),
                Arg::Number => q.bind($number.unwrap_or(0)),
            };
        }
        q
    }};
}

/// Runs a step on a connection or pool: (rows touched or returned, first column of the first row).
macro_rules! execute {
    ($conn:expr, $step:expr, $number:expr) => {{
        let q = bound!($step, $number);
        if $step.fetch == Fetch::No {
            q.execute($conn).await.map(|r| (r.rows_affected(), None))
        } else {
            q.fetch_all($conn).await.map(|rows| (rows.len() as u64, rows.first().and_then(|r| r.try_get::<i64, _>(0).ok())))
        }
    }};
}

fn checked(step: &Step, got: Result<(u64, Option<i64>), sqlx::Error>) -> Result<Option<i64>, String> {
    let (n, number) = got.map_err(|e| format!("{}: {e}", step.sql))?;
    if step.must && n != 1 {
        return Err(format!("{}: touched {n} rows", step.sql));
    }
    Ok(number)
}

/// The replay's databases: freshly migrated, one product with ample stock.
struct Replay {
    catalog: Db,
    orders: Db,
    sku: String,
}

impl Replay {
    async fn open(place: &Place, part: &str) -> Result<Replay, String> {
        let d = DatabaseConfig::default();
        let options = DbOptions { max_connections: d.max_connections, busy_timeout: Duration::from_secs(d.busy_timeout_secs) };
        let cat = Db::connect(&place.url(part, "catalog"), "catalog", &options).await.map_err(err)?;
        migrate::migrate(&cat, &[&PLATFORM, &catalog::MIGRATIONS]).await.map_err(err)?;
        let ord = Db::connect(&place.url(part, "orders"), "orders", &options).await.map_err(err)?;
        migrate::migrate(&ord, &[&PLATFORM, &orders::MIGRATIONS]).await.map_err(err)?;
        catalog::demo::generate(&cat, 1, false).await.map_err(err)?;
        let sku: String = on_db!(cat, pool => sqlx::query_scalar("SELECT sku FROM variants ORDER BY id DESC LIMIT 1").fetch_one(pool).await)
            .map_err(err)?;
        let inventory = Inventory { db: cat.clone(), reservation_ttl: catalog::RESERVATION_TTL, cache: None };
        inventory.set_count(&sku, None, 1_000_000_000, "stocktake", "checkout-bench").await.map_err(err)?;
        Ok(Replay { catalog: cat, orders: ord, sku })
    }

    async fn close(&self) {
        self.catalog.close().await;
        self.orders.close().await;
    }

    async fn checkout(&self) -> Result<(), String> {
        for unit in checkout_units(&self.sku, Mode::Live) {
            let db = if unit.orders { &self.orders } else { &self.catalog };
            if unit.transaction {
                run_transaction(db, &unit.steps).await?;
            } else {
                for step in &unit.steps {
                    checked(step, on_db!(db, pool => execute!(pool, step, None::<i64>)))?;
                }
            }
        }
        Ok(())
    }
}

async fn run_transaction(db: &Db, steps: &[Step]) -> Result<(), String> {
    let mut tx: Tx = db.begin().await.map_err(err)?;
    let mut number = None;
    for step in steps {
        let got = checked(step, on_tx!(tx, c => execute!(c, step, number)))?;
        if step.fetch == Fetch::Number {
            number = got;
        }
    }
    tx.commit().await.map_err(err)
}

struct Reference {
    replay: Stats,
    pgbench: Pgbench,
}

enum Pgbench {
    NotPostgres,
    Missing,
    Failed(String),
    Ran(f64),
}

async fn reference(args: &Args, place: &Place) -> Result<Reference, String> {
    let replay = Arc::new(Replay::open(place, "replay").await?);
    let window = Window::new(args.seconds);
    let tasks = (0..args.connections)
        .map(|_| {
            let replay = replay.clone();
            tokio::spawn(async move {
                let mut samples = Samples::default();
                while Instant::now() < window.until {
                    let started = Instant::now();
                    let done = replay.checkout().await;
                    samples.record(&window, started, done.map(|()| started.elapsed()));
                }
                samples
            })
        })
        .collect();
    let samples = join_all(tasks).await?.into_iter().fold(Samples::default(), Samples::merge);
    replay.close().await;
    let pgbench = match (&place.admin, installed("pgbench")) {
        (None, _) => Pgbench::NotPostgres,
        (Some(_), false) => Pgbench::Missing,
        (Some(_), true) => run_pgbench(args, place).await.map_or_else(Pgbench::Failed, Pgbench::Ran),
    };
    Ok(Reference { replay: stats(samples, args.seconds), pgbench })
}

fn installed(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The same statements as a pgbench script: one pgbench transaction is one checkout.
fn pgbench_script(sku: &str) -> String {
    let mut script = String::from("-- checkout-bench: the database work of one checkout\n");
    script += "\\set n :client_id * 1000000000000000 + random(1, 999999999999999)\n";
    for unit in checkout_units(sku, Mode::Pgbench) {
        let schema = if unit.orders { "orders" } else { "catalog" };
        script += if unit.transaction { "BEGIN;\n" } else { "" };
        for step in &unit.steps {
            script += &render_sql(step.sql, &step.args, schema);
            script += ";\n";
        }
        script += if unit.transaction { "COMMIT;\n" } else { "" };
    }
    script
}

/// A statement with its values written in and its tables qualified with `schema`.
fn render_sql(sql: &str, args: &[Arg], schema: &str) -> String {
    let mut out = String::with_capacity(sql.len() * 2);
    let mut word = String::new();
    for ch in sql.chars().chain([' ']) {
        if ch.is_ascii_alphanumeric() || ch == '_' || (ch == '$' && word.is_empty()) {
            word.push(ch);
            continue;
        }
        let param = word.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()).and_then(|n| n.checked_sub(1)).and_then(|i| args.get(i));
        match param {
            Some(arg) => out += &literal(arg),
            None if TABLES.contains(&word.as_str()) => out += &format!("{schema}.{word}"),
            None => out += &word,
        }
        word.clear();
        out.push(ch);
    }
    out.pop();
    out
}

fn literal(arg: &Arg) -> String {
    match arg {
        Arg::Text(s) => format!("'{}'", s.replace('\'', "''")),
        Arg::Raw(s) => s.clone(),
        Arg::Int(i) => i.to_string(),
        Arg::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
        Arg::NullText | Arg::NullInt => "NULL".to_owned(),
        Arg::Now => "now()".to_owned(),
        Arg::Number => ":n".to_owned(),
    }
}

async fn run_pgbench(args: &Args, place: &Place) -> Result<f64, String> {
    eprintln!("reference: pgbench");
    let scratch = Replay::open(place, "pgbench").await?;
    let script = pgbench_script(&scratch.sku);
    scratch.close().await;
    let file = place.dir.join("checkout.pgbench.sql");
    std::fs::write(&file, script).map_err(err)?;
    let (c, t) = (args.connections.to_string(), args.seconds.to_string());
    let out = tokio::process::Command::new("pgbench")
        .args(["-n", "-c", &c, "-j", "2", "-T", &t, "-f"])
        .arg(&file)
        .arg(place.url("pgbench", ""))
        .output()
        .await
        .map_err(err)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tps = stdout.lines().find_map(|l| l.trim().strip_prefix("tps = ")).and_then(|v| v.split_whitespace().next()?.parse().ok());
    match tps {
        Some(tps) if out.status.success() => Ok(tps),
        _ => Err(String::from_utf8_lossy(&out.stderr).lines().take(3).collect::<Vec<_>>().join(" / ")),
    }
}

// The report

fn num(v: f64, digits: usize) -> String {
    if v > 0.0 { format!("{v:.digits$}") } else { "-".into() }
}

fn ratio(ours: f64, reference: f64) -> String {
    if ours > 0.0 && reference > 0.0 { format!("{:.2}", ours / reference) } else { "-".into() }
}

fn table(title: &str, rows: &[[String; 4]]) -> String {
    let mut out = format!("\n### {title}\n\n| metric | Emporium | reference | ratio |\n|---|---:|---:|---:|\n");
    for [metric, ours, reference, r] in rows {
        out += &format!("| {metric} | {ours} | {reference} | {r} |\n");
    }
    out
}

fn row(metric: &str, ours: String, reference: String, ratio: String) -> [String; 4] {
    [metric.to_owned(), ours, reference, ratio]
}

fn first_error(what: &str, e: &Option<String>) -> String {
    e.as_ref().map_or_else(String::new, |e| {
        let e: String = e.replace(['`', '\n', '|'], " ").chars().take(200).collect();
        format!("\nFirst error ({what}): `{e}`\n")
    })
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()));
    format!("{}, {cores} cores", model.unwrap_or_else(|| "unknown CPU".into()))
}

/// The reference throughput and what it is.
fn reference_tps(r: &Reference) -> (f64, &'static str) {
    match r.pgbench {
        Pgbench::Ran(tps) => (tps, "pgbench"),
        _ => (r.replay.per_sec, "replay"),
    }
}

fn reference_line(args: &Args, r: &Reference) -> String {
    let replay = format!(
        "the replay loop ({} tasks, the server's pool size per database) made {:.0} checkouts/s (p50 {} ms, p99 {} ms, {} errors)",
        args.connections,
        r.replay.per_sec,
        num(r.replay.p50_ms, 2),
        num(r.replay.p99_ms, 2),
        r.replay.errors
    );
    let pgbench = match &r.pgbench {
        Pgbench::NotPostgres => "pgbench does not apply to SQLite; the reference is the replay loop".to_owned(),
        Pgbench::Missing => "pgbench is not on PATH; the reference is the replay loop".to_owned(),
        Pgbench::Failed(e) => format!("pgbench failed ({e}); the reference is the replay loop"),
        Pgbench::Ran(tps) => format!("`pgbench -n -c {} -j 2 -T {}` on the same statements: {tps:.0} tps (the reference)", args.connections, args.seconds),
    };
    format!("{replay}; {pgbench}")
}

fn render(args: &Args, place: &Place, m: &Measured, r: &Reference) -> String {
    let database = match &place.admin {
        Some(url) => format!("PostgreSQL at {} (fresh databases made and dropped by the run)", mask_url(url)),
        None => "SQLite, one file per service in a fresh folder".to_owned(),
    };
    let mut out = String::from("\n## Checkout\n\nWritten by `checkout-bench`: a release `emporium serve` on a fresh data folder, set up over the admin API, driven by guest shoppers over HTTP/1.1 keep-alive; nothing is pinned (server, database and client share the machine).\n\n");
    out += &format!("- Machine: {}\n- Database: {database}\n", machine());
    out += &format!("- Load: {} concurrent shoppers, {} s measured after {} s warm-up\n", args.connections, args.seconds, WARMUP.as_secs());
    out += &format!("- Reference: the checkout's statements replayed without HTTP or the service; {}\n", reference_line(args, r));
    let add = &m.add;
    out += &table("Add to cart (one unit per request, each shopper its own cart)", &[
        row("requests/s", num(add.per_sec, 0), "-".into(), "-".into()),
        row("p50 ms", num(add.p50_ms, 2), "-".into(), "-".into()),
        row("p99 ms", num(add.p99_ms, 2), "-".into(), "-".into()),
        row("errors", add.errors.to_string(), "-".into(), "-".into()),
    ]);
    out += &first_error("add to cart", &add.first_error);
    let (tps, source) = reference_tps(r);
    let (req, flow, rep) = (&m.request, &m.flow, &r.replay);
    out += &table("Full checkout (create cart, add item, email, address, shipping method, checkout)", &[
        row("paid checkouts/s", num(flow.per_sec, 0), format!("{} ({source})", num(tps, 0)), ratio(flow.per_sec, tps)),
        row("checkout request p50 ms", num(req.p50_ms, 2), num(rep.p50_ms, 2), ratio(req.p50_ms, rep.p50_ms)),
        row("checkout request p99 ms", num(req.p99_ms, 2), num(rep.p99_ms, 2), ratio(req.p99_ms, rep.p99_ms)),
        row("whole flow p50 ms", num(flow.p50_ms, 2), "-".into(), "-".into()),
        row("whole flow p99 ms", num(flow.p99_ms, 2), "-".into(), "-".into()),
        row("errors", flow.errors.to_string(), rep.errors.to_string(), "-".into()),
    ]);
    out += &first_error("checkout", &flow.first_error);
    out += &first_error("replay", &rep.first_error);
    out += &flash_table(&m.flash);
    out += "\nRatios: throughput, higher is better; latency, lower is better. The replay runs, per checkout, the statements of `Orders::checkout` \
            in their transactions (the cart row the flow made; the catalog's reserve; create_order; the test gateway's charge; apply_outcome's \
            paid transaction; the catalog's commit; the order's stock mark) with the same ids, values and outbox events, against freshly \
            migrated databases of the same kind. Left out: the reads that price the cart and render the answer, and the Idempotency-Key record. \
            In the flash-sale table the reference column holds what a correct shop must show.\n";
    out
}

fn flash_table(f: &Flash) -> String {
    let want = f.expected_paid();
    let yes_no = |b: bool| if b { "**yes**" } else { "no" }.to_owned();
    let mut out = table(
        &format!("Flash sale ({} buyers, one SKU with {FLASH_STOCK} units, carts ready first, then all check out at once; at most {IN_FLIGHT} requests in flight so the client keeps to its sockets)", f.buyers),
        &[
            row("orders/s (paid ÷ checkout wall time)", num(f.paid as f64 / f.seconds.max(1e-9), 0), "-".into(), "-".into()),
            row("checkout p99 ms", num(f.p99_ms, 2), "-".into(), "-".into()),
            row("checkout wall time s", num(f.seconds, 3), "-".into(), "-".into()),
            row("paid orders", f.paid.to_string(), want.to_string(), "-".into()),
            row("409 out_of_stock", f.out_of_stock.to_string(), (f.buyers - want).to_string(), "-".into()),
            row("other failures", f.failed.to_string(), "0".into(), "-".into()),
            row("on hand / reserved after", format!("{} / {}", f.on_hand, f.reserved), format!("{} / 0", FLASH_STOCK - want as i64), "-".into()),
            row("oversold", yes_no(f.oversold()), "no".into(), "-".into()),
        ],
    );
    out += &first_error("flash sale", &f.first_failure);
    out
}
