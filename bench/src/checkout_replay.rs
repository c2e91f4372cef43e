//! The checkout benchmark's reference: the database work of one checkout —
//! every statement `Orders::checkout` runs in its transactions, with the
//! same kind of ids, values and outbox events — replayed with the same
//! concurrency against freshly migrated databases of the same kind, without
//! HTTP or the service; on PostgreSQL also as a pgbench script.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use catalog::Inventory;
use kernel::Envelope;
use kernel::config::DatabaseConfig;
use kernel::id::Uuid;
use platform::db::{Db, DbOptions, Dialect, Tx, now_ms};
use platform::migrate::{self, PLATFORM};
use platform::{on_db, on_tx, on_write};
use serde_json::{Value, json};
use sqlx::Row;

use super::{ADDRESS, Args, Place, Samples, Stats, Window, err, join_all, stats};

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
const NEXT_NUMBER_SQLITE: &str = "UPDATE counters SET value = value + 1 WHERE name = 'order_number' RETURNING value";
const NEXT_NUMBER_POSTGRES: &str = "SELECT nextval('order_numbers')";
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
const TABLES: [&str; 15] = [
    "carts", "reservations", "stock_locations", "variants", "inventory_levels", "reservation_lines", "outbox", "counters", "order_numbers",
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
    dialect: Dialect,
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
fn checkout_units(sku: &str, mode: Mode, dialect: Dialect) -> Vec<Unit> {
    let ids = Ids {
        mode,
        dialect,
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
        step(if ids.dialect == Dialect::Postgres { NEXT_NUMBER_POSTGRES } else { NEXT_NUMBER_SQLITE }, vec![]).number(),
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
        for unit in checkout_units(&self.sku, Mode::Live, self.orders.dialect()) {
            let db = if unit.orders { &self.orders } else { &self.catalog };
            if unit.transaction {
                run_transaction(db, &unit.steps).await?;
            } else {
                for step in &unit.steps {
                    checked(step, on_write!(db, pool => execute!(pool, step, None::<i64>)))?;
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

pub struct Reference {
    /// The replay loop: checkouts/s and the latency of one replayed checkout.
    pub replay: Stats,
    pub pgbench: Pgbench,
}

pub enum Pgbench {
    NotPostgres,
    Missing,
    Failed(String),
    Ran(f64),
}

pub async fn reference(args: &Args, place: &Place) -> Result<Reference, String> {
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
    for unit in checkout_units(sku, Mode::Pgbench, Dialect::Postgres) {
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
        Arg::Bool(b) => String::from(if *b { "TRUE" } else { "FALSE" }),
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
