//! The checkout benchmark: a real release `emporium serve` on a fresh data
//! folder (or fresh PostgreSQL databases), set up over the admin API, then
//! driven by guest shoppers: add to cart, the whole checkout flow, and a
//! flash sale of one SKU with exactly 100 units. The reference, measured in
//! the same invocation, is the checkout's own database work replayed without
//! HTTP or the service (and, on PostgreSQL, as a pgbench script when pgbench
//! is installed). Prints a Markdown section; `--out FILE` appends it.
//!
//! The reference is in `checkout_replay.rs`, the Markdown in `checkout_report.rs`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use checkout_replay::{Reference, reference};
use clap::Parser;
use emporium_bench::place::Place;
use kernel::id::Uuid;
use reqwest::Method;
use serde_json::Value;
use tokio::sync::{Barrier, Semaphore};
use tokio::task::JoinHandle;

mod checkout_count;
mod checkout_replay;
mod checkout_report;

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
    let place = Place::new(args.database_url.clone(), "checkout", &["server", "replay", "pgbench", "count"])?;
    if let Err(e) = place.create().await {
        place.remove().await;
        return Err(e);
    }
    let result = run(&args, &place).await;
    place.remove().await;
    let (measured, reference) = result?;
    let report = checkout_report::render(&args, &place, &measured, &reference);
    println!("{report}");
    if let Some(out) = &args.out {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(out).map_err(|e| format!("{}: {e}", out.display()))?;
        file.write_all(report.as_bytes()).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    measured.flash.verdict()
}

async fn run(args: &Args, place: &Place) -> Result<(Measured, Reference), String> {
    let bins = std::env::current_exe().map_err(err)?.parent().map(Path::to_path_buf).ok_or("no folder for the binaries")?;
    let server = start_server(&bins, place, "server", None)?;
    let measured = measure(&server.1, args).await;
    stop(server.0);
    let mut measured = measured?;
    eprintln!("counting the statements of one checkout");
    measured.counted = checkout_count::count(&bins, place).await?;
    eprintln!("reference: the checkout's statements, without HTTP or the service");
    Ok((measured, reference(args, place).await?))
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

// The server

/// `emporium --config <file>` (the file only turns test payments on), with
/// no `EMPORIUM_*` setting from the caller's environment: only the run's own database.
fn emporium(bins: &Path, place: &Place, part: &str) -> Command {
    let mut cmd = Command::new(bins.join("emporium"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("EMPORIUM_") {
            cmd.env_remove(key);
        }
    }
    if place.admin.is_some() {
        cmd.env("EMPORIUM_DATABASE_URL", place.url(part, ""));
    }
    cmd.arg("--config").arg(place.dir.join("emporium.toml"));
    cmd
}

/// Makes the admin, then starts `emporium serve` on `place`'s `part`;
/// returns it and its address. With `log`, its log lines go to that file,
/// filtered with that filter.
fn start_server(bins: &Path, place: &Place, part: &str, log: Option<(&Path, &str)>) -> Result<(Child, String), String> {
    let data = place.dir.join(part);
    // The bench pays with test cards, which a shop takes only when told to.
    std::fs::write(place.dir.join("emporium.toml"), "[orders]\ntest_payments = true\n\n# A load generator is one client: no request limits.\n[limits]\nper_ip_per_minute = 0\nper_principal_per_minute = 0\ncarts_per_ip_per_hour = 0\nsign_ups_per_ip_per_hour = 0\ndiscount_attempts_per_cart_per_10_min = 0\n").map_err(err)?;
    let mut create = emporium(bins, place, part)
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
    let mut serve = emporium(bins, place, part);
    serve.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"]).arg(&data).stdout(Stdio::piped()).stderr(Stdio::null());
    if let Some((file, filter)) = log {
        serve.env("EMPORIUM_LOG", filter).stderr(std::fs::File::create(file).map_err(|e| format!("{}: {e}", file.display()))?);
    }
    let mut child = serve.spawn().map_err(err)?;
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

    fn want(self, status: u16, what: &str) -> Result<Reply, String> {
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
        let reply = self.send(Method::POST, "/api/v1/carts", None, &[]).await?.want(201, "create cart")?;
        Ok(Cart { id: reply.text("id")?, secret: reply.text("secret")? })
    }
}

/// A guest cart holding one unit of `sku`, with email, address and shipping method.
async fn fill_cart(api: &Api, sku: &str, method: &str) -> Result<Cart, String> {
    let cart = api.new_cart().await?;
    let item = format!(r#"{{"sku":"{sku}","quantity":1}}"#);
    api.cart(&cart, Method::POST, "/items", Some(item)).await?.want(200, "add item")?;
    api.cart(&cart, Method::PUT, "/email", Some(EMAIL.into())).await?.want(200, "email")?;
    api.cart(&cart, Method::PUT, "/shipping-address", Some(ADDRESS.into())).await?.want(200, "address")?;
    let choice = format!(r#"{{"id":"{method}"}}"#);
    api.cart(&cart, Method::PUT, "/shipping-method", Some(choice)).await?.want(200, "shipping method")?;
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
    let reply = api.send(Method::POST, "/api/v1/auth/login", Some(body), &[]).await?.want(200, "login")?;
    Ok(Api { bearer: Some(reply.text("access_token")?.into()), ..api.clone() })
}

/// Shipping, tax, products and stock; returns the shipping method's id.
async fn set_up(admin: &Api) -> Result<String, String> {
    let method = admin.send(Method::POST, "/api/v1/admin/shipping-methods", Some(SHIPPING.into()), &[]).await?;
    let method = method.want(201, "shipping method")?.text("id")?;
    admin.send(Method::POST, "/api/v1/admin/tax-rates", Some(TAX.into()), &[]).await?.want(201, "tax rate")?;
    let levels = CART_SKUS.iter().map(|s| (*s, 1000)).chain([(CHECKOUT_SKU, 1_000_000_000), (FLASH_SKU, FLASH_STOCK)]);
    for (sku, on_hand) in levels {
        let product = format!(
            r#"{{"title":"Bench {sku}","status":"active","variants":[{{"sku":"{sku}","prices":{{"USD":1999}},"weight_grams":300}}]}}"#
        );
        admin.send(Method::POST, "/api/v1/admin/products", Some(product), &[]).await?.want(201, "product")?;
        let count = format!(r#"{{"on_hand":{on_hand}}}"#);
        admin.send(Method::PUT, &format!("/api/v1/admin/inventory/{sku}"), Some(count), &[]).await?.want(200, "stock")?;
    }
    Ok(method)
}

/// One whole checkout, with the shipping options, before anything is measured.
async fn probe(api: &Api, method: &str) -> Result<(), String> {
    let cart = fill_cart(api, CHECKOUT_SKU, method).await?;
    let options = api.cart(&cart, Method::GET, "/shipping-options", None).await?.want(200, "shipping options")?;
    if !options.json()["data"].as_array().is_some_and(|d| d.iter().any(|m| m["id"] == method)) {
        return Err(options.describe("the shipping method is not among the options"));
    }
    let reply = check_out(api, &cart).await?;
    if paid(&reply) { Ok(()) } else { Err(reply.describe("probe checkout")) }
}

/// (on hand, reserved) of a SKU over all locations.
async fn stock(admin: &Api, sku: &str) -> Result<(i64, i64), String> {
    let reply = admin.send(Method::GET, &format!("/api/v1/admin/inventory?sku={sku}"), None, &[]).await?.want(200, "inventory")?;
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
    counted: checkout_count::Counted,
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
    Ok(Measured { add: stats(add, s), request: stats(request, s), flow: stats(flow, s), flash, counted: Default::default() })
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
        samples.record(&window, started, reply.and_then(|r| r.want(200, "add item")).map(|_| started.elapsed()));
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

    /// More paid orders than units, or stock below zero.
    fn oversold(&self) -> bool {
        self.paid as i64 > FLASH_STOCK || self.on_hand < 0
    }

    /// Exactly the units sold that were paid for, nothing oversold, nothing left held.
    fn verdict(&self) -> Result<(), String> {
        let consistent = self.on_hand == FLASH_STOCK - self.paid as i64 && self.reserved == 0;
        if self.paid == self.expected_paid() && !self.oversold() && consistent {
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
