//! The notification benchmark: a shop started in process with only the
//! notify service (a fresh data folder, or fresh PostgreSQL databases), fed
//! `user.password_reset_requested` events published straight onto its bus,
//! each of which becomes one email. Measured: events/s from the first
//! publish until every message is `sent`, to the dev mailbox and to a real
//! SMTP server (the aiosmtpd sink of the notify tests), and the time from
//! event to delivery at a steady rate. The references, measured in the same
//! invocation: the storage floor (the inserts and the update a delivered
//! message needs at least, on a database of the same kind) and the same
//! messages sent straight to the sink with lettre. Prints a Markdown
//! section; `--out FILE` appends it.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use emporium_bench::place::Place;
use emporium_bench::report::{first_error, machine, num, ratio, row, table};
use kernel::Envelope;
use kernel::config::{Config, mask_url};
use kernel::id::{MailId, NotificationId, Uuid};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use platform::app::App;
use platform::bus::EventBus;
use platform::db::{Db, DbOptions, now_ms};
use platform::migrate::{self, PLATFORM};
use platform::{on_db, on_write};
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::task::JoinHandle;

#[derive(Parser)]
#[command(about = "Emporium notification benchmark (see the Benchmarks section of README.md)")]
struct Args {
    /// Events in the dev-mailbox throughput run.
    #[arg(long, default_value_t = 5000)]
    events: usize,
    /// Events in the SMTP throughput run.
    #[arg(long, default_value_t = 1000)]
    smtp_events: usize,
    /// Events per second in the dev-mailbox latency run.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Events per second in the SMTP latency run.
    #[arg(long, default_value_t = 100)]
    smtp_rate: u32,
    /// Seconds each latency run publishes for.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Tasks publishing at once in the throughput runs.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// `postgres://…/postgres`: a server on which the run creates (and drops)
    /// databases of its own. Without it, SQLite files in a fresh folder.
    #[arg(long, env = "EMPORIUM_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Append the Markdown section to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Events (and reference messages) sent unmeasured before each throughput run.
const WARMUP: usize = 50;
/// How often the run looks whether everything was sent.
const POLL: Duration = Duration::from_millis(20);
/// A run gives up when no message was sent for this long.
const STALL: Duration = Duration::from_secs(30);
const EVENT: &str = "user.password_reset_requested";
const TEMPLATE: &str = "user.password_reset_requested.email";
const SENT_SINCE: &str = "SELECT COUNT(*) FROM deliveries WHERE status = 'sent' AND created_ms >= $1";
const SENT_ROWS: &str = "SELECT event_id, created_ms, sent_ms FROM deliveries WHERE status = 'sent' AND created_ms >= $1";
const SAMPLE: &str = "SELECT subject, body, html FROM deliveries WHERE channel = 'email' ORDER BY id LIMIT 1";
// The storage floor's statements, on the columns `store::insert_delivery`,
// `store::insert_mail` and `store::finish_attempt` write.
const FLOOR_DELIVERY: &str = "INSERT INTO deliveries (id, dedupe_key, event_id, event_type, template, channel, recipient, user_id, \
     subject, body, html, status, attempts, next_attempt_ms, created_ms, updated_ms, lease_until_ms) \
     VALUES ($1, $2, $3, $4, $5, 'email', $6, $7, $8, $9, $10, 'queued', 0, $11, $11, $11, 0)";
const FLOOR_MAIL: &str = "INSERT INTO mailbox (id, delivery_id, channel, sender, recipient, subject, text, html, headers, created_ms) \
     VALUES ($1, $2, 'email', $3, $4, $5, $6, $7, $8, $9)";
const FLOOR_SENT: &str = "UPDATE deliveries SET status = 'sent', attempts = 1, provider_message_id = $1, sent_ms = $2, updated_ms = $2 \
     WHERE id = $3";

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    if args.events == 0 || args.smtp_events == 0 || args.rate == 0 || args.smtp_rate == 0 || args.seconds == 0 || args.publishers == 0 {
        return Err("--events, --smtp-events, --rate, --smtp-rate, --seconds and --publishers must be at least 1".into());
    }
    let place = Place::new(args.database_url.clone(), "notify-bench", &["mailbox", "smtp", "reference"])?;
    if let Err(e) = place.create().await {
        place.remove().await;
        return Err(e);
    }
    let result = run(&args, &place).await;
    place.remove().await;
    let measured = result?;
    let report = render(&args, &place, &measured);
    println!("{report}");
    if let Some(out) = &args.out {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(out).map_err(|e| format!("{}: {e}", out.display()))?;
        file.write_all(report.as_bytes()).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    measured.verdict()
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn run(args: &Args, place: &Place) -> Result<Measured, String> {
    let config = shop_config(place, "mailbox");
    let concurrency = config.notify.concurrency.max(1);
    let pool = config.database.max_connections;
    let options = DbOptions { max_connections: pool, busy_timeout: Duration::from_secs(config.database.busy_timeout_secs) };
    let from = config.notify.mail_from.clone();
    let shop = start_shop(config).await?;
    let runs = pipeline_runs(&shop, "mailbox", args.events, args.rate, args).await;
    shop.app.shutdown().await;
    let (mailbox, sample, mailbox_latency) = runs?;
    eprintln!("reference: the storage floor, {} messages", args.events);
    let floor = storage_floor(place, &options, &from, sample, args.events, concurrency).await?;
    let smtp = match start_sink(place).await {
        Ok(mut sink) => {
            let result = smtp_runs(args, place, &sink, &from).await;
            let _ = sink.child.kill().await;
            SmtpPart::Measured(Box::new(result?))
        }
        Err(why) => {
            eprintln!("skipping the SMTP runs: {why}");
            SmtpPart::Skipped(why)
        }
    };
    Ok(Measured { concurrency, pool, mailbox, mailbox_latency, floor, smtp })
}

async fn smtp_runs(args: &Args, place: &Place, sink: &Sink, from: &str) -> Result<SmtpMeasured, String> {
    let url = format!("smtp://127.0.0.1:{}", sink.port);
    let mut config = shop_config(place, "smtp");
    config.notify.smtp_url = Some(url.clone());
    let concurrency = config.notify.concurrency.max(1);
    let shop = start_shop(config).await?;
    let runs = pipeline_runs(&shop, "smtp", args.smtp_events, args.smtp_rate, args).await;
    shop.app.shutdown().await;
    let (throughput, sample, latency) = runs?;
    eprintln!("reference: {} messages straight to the sink with lettre", args.smtp_events);
    let direct = smtp_direct(&url, from, sample, args.smtp_events, concurrency).await?;
    // The pipeline's warm-up and runs, then lettre's warm-up and run.
    let expected = WARMUP + throughput.sent + latency.sent + WARMUP + direct.done;
    Ok(SmtpMeasured { throughput, latency, direct, stored: stored_messages(&sink.dir), expected })
}

// The shop

/// The default configuration with only the notify service, its data in `part`.
fn shop_config(place: &Place, part: &str) -> Config {
    let mut config = Config { data_dir: place.dir.join(part), ..Config::default() };
    config.services = vec![notify::NAME.to_owned()];
    if place.admin.is_some() {
        config.database.url = Some(place.url(part, notify::NAME));
    }
    config
}

/// A running shop with only the notify service: its database and its bus.
struct Shop {
    app: App,
    db: Db,
    bus: Arc<dyn EventBus>,
}

/// Starts the notify service as the binary does (migrations, consumer,
/// sender, outbox relay), without an HTTP listener.
async fn start_shop(config: Config) -> Result<Shop, String> {
    let app = App::start(Arc::new(config), &[notify::spec()], axum::Router::new(), false).await.map_err(err)?;
    let Some(db) = app.db(notify::NAME).cloned() else {
        app.shutdown().await;
        return Err("the notify service did not start".into());
    };
    let bus = app.bus().clone();
    Ok(Shop { app, db, bus })
}

/// A password-reset request for a user of its own: exactly one email.
fn reset_event(tag: &str, n: usize) -> Envelope {
    let user = format!("usr_bench_{tag}_{n}");
    let token = format!("{}{}", Uuid::now_v7().simple(), Uuid::now_v7().simple());
    let data = json!({
        "user_id": user,
        "email": format!("bench-{tag}-{n}@example.com"),
        "name": format!("Bench Shopper {n}"),
        "url": format!("https://shop.example/account/reset-password?token={token}"),
        "expires_at_ms": now_ms() + 3_600_000,
    });
    Envelope::new(EVENT, user, data)
}

/// The rendered message the pipeline queued, copied by the references.
#[derive(Clone)]
struct Sample {
    subject: String,
    body: String,
    html: Option<String>,
}

async fn sample(db: &Db) -> Result<Sample, String> {
    let row = on_db!(db, pool => sqlx::query_as::<_, (String, String, Option<String>)>(SAMPLE).fetch_optional(pool).await).map_err(err)?;
    let (subject, body, html) = row.ok_or("no delivery to copy the message from")?;
    Ok(Sample { subject, body, html })
}

// Measuring

#[derive(Default)]
struct Errors {
    count: usize,
    first: Option<String>,
}

impl Errors {
    fn add(&mut self, e: String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(e);
        }
    }

    fn merge(mut self, other: Errors) -> Errors {
        self.count += other.count;
        self.first = self.first.or(other.first);
        self
    }
}

async fn join_all<T>(tasks: Vec<JoinHandle<T>>) -> Result<Vec<T>, String> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.map_err(err)?);
    }
    Ok(out)
}

/// Runs `one(0)` … `one(count - 1)` from `tasks` tasks, each taking the next
/// number when it is done; answers how many succeeded, and the errors.
async fn in_tasks<F, Fut>(count: usize, tasks: usize, one: F) -> Result<(usize, Errors), String>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let (one, next) = (Arc::new(one), Arc::new(AtomicUsize::new(0)));
    let handles: Vec<JoinHandle<(usize, Errors)>> = (0..tasks.max(1))
        .map(|_| {
            let (one, next) = (one.clone(), next.clone());
            tokio::spawn(async move {
                let (mut done, mut errors) = (0, Errors::default());
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        break (done, errors);
                    }
                    match (*one)(n).await {
                        Ok(()) => done += 1,
                        Err(e) => errors.add(e),
                    }
                }
            })
        })
        .collect();
    let (mut done, mut errors) = (0, Errors::default());
    for (d, e) in join_all(handles).await? {
        done += d;
        errors = errors.merge(e);
    }
    Ok((done, errors))
}

/// Polls every [`POLL`] until `want` deliveries made since `since_ms` are
/// sent, or none was sent for [`STALL`]: the count, and when it last grew.
async fn wait_sent(db: &Db, since_ms: i64, want: usize) -> Result<(usize, Instant), String> {
    let mut last: (Option<usize>, Instant) = (None, Instant::now());
    loop {
        let sent = on_db!(db, pool => sqlx::query_scalar::<_, i64>(SENT_SINCE).bind(since_ms).fetch_one(pool).await).map_err(err)?;
        let sent = usize::try_from(sent).unwrap_or(0);
        if last.0 != Some(sent) {
            last = (Some(sent), Instant::now());
        }
        if sent >= want || last.1.elapsed() >= STALL {
            return Ok((sent, last.1));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A burst: every event published as fast as the bus takes them, then
/// waited for until all are sent.
struct Throughput {
    events: usize,
    /// From the first publish until the last publish returned (each event is queued by then).
    publish_secs: f64,
    /// From the first publish until the poll that saw every message sent.
    secs: f64,
    sent: usize,
    errors: Errors,
}

impl Throughput {
    fn per_sec(&self) -> f64 {
        self.sent as f64 / self.secs.max(1e-9)
    }

    fn publish_per_sec(&self) -> f64 {
        (self.events - self.errors.count) as f64 / self.publish_secs.max(1e-9)
    }

    fn complete(&self) -> bool {
        self.sent == self.events && self.errors.count == 0
    }
}

async fn throughput(shop: &Shop, tag: &str, events: usize, publishers: usize) -> Result<Throughput, String> {
    // Rows of an earlier run never share this run's first millisecond.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let since = now_ms();
    let (bus, tag): (Arc<dyn EventBus>, Arc<str>) = (shop.bus.clone(), tag.into());
    let started = Instant::now();
    let (_, errors) = in_tasks(events, publishers, move |n| {
        let (bus, tag) = (bus.clone(), tag.clone());
        async move {
            let event = reset_event(&tag, n);
            bus.publish(&event).await.map_err(err)
        }
    })
    .await?;
    let publish_secs = started.elapsed().as_secs_f64();
    let (sent, last) = wait_sent(&shop.db, since, events - errors.count).await?;
    Ok(Throughput { events, publish_secs, secs: last.duration_since(started).as_secs_f64(), sent, errors })
}

/// Events published at a fixed rate, and how long each took to be queued and sent.
struct Latency {
    rate: u32,
    seconds: u64,
    published: usize,
    achieved: f64,
    sent: usize,
    errors: Errors,
    /// Milliseconds from publish to the row in `deliveries`, sorted.
    queued: Vec<i64>,
    /// Milliseconds from publish to `sent_ms`, sorted.
    delivered: Vec<i64>,
}

impl Latency {
    fn complete(&self) -> bool {
        self.sent == self.published && self.errors.count == 0
    }
}

/// Publishes `rate` events a second for `seconds` (each in a task of its
/// own, so a slow publish does not hold up the next), then matches the
/// deliveries' `created_ms` and `sent_ms` with the publish times.
async fn steady(shop: &Shop, tag: &str, rate: u32, seconds: u64) -> Result<Latency, String> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let since = now_ms();
    let total = (rate as usize).saturating_mul(seconds as usize);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut published: HashMap<String, i64> = HashMap::with_capacity(total);
    let mut tasks: Vec<JoinHandle<Result<(), String>>> = Vec::with_capacity(total);
    let started = Instant::now();
    for n in 0..total {
        ticks.tick().await;
        let event = reset_event(tag, n);
        published.insert(event.id.to_string(), now_ms());
        let bus = shop.bus.clone();
        tasks.push(tokio::spawn(async move { bus.publish(&event).await.map_err(err) }));
    }
    let span = started.elapsed().as_secs_f64();
    let achieved = if total > 1 { (total - 1) as f64 / span.max(1e-9) } else { f64::from(rate) };
    let mut errors = Errors::default();
    for result in join_all(tasks).await? {
        if let Err(e) = result {
            errors.add(e);
        }
    }
    wait_sent(&shop.db, since, total - errors.count).await?;
    let rows = on_db!(shop.db, pool => sqlx::query_as::<_, (Option<String>, i64, Option<i64>)>(SENT_ROWS).bind(since).fetch_all(pool).await)
        .map_err(err)?;
    let (mut queued, mut delivered) = (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
    for (event, created_ms, sent_ms) in rows {
        let Some(at) = event.and_then(|e| published.get(&e).copied()) else { continue };
        queued.push(created_ms - at);
        if let Some(sent_ms) = sent_ms {
            delivered.push(sent_ms - at);
        }
    }
    queued.sort_unstable();
    delivered.sort_unstable();
    Ok(Latency { rate, seconds, published: total, achieved, sent: delivered.len(), errors, queued, delivered })
}

/// The warm-up, the burst (and the message it queued) and the steady rate, on one shop.
async fn pipeline_runs(shop: &Shop, label: &str, events: usize, rate: u32, args: &Args) -> Result<(Throughput, Sample, Latency), String> {
    eprintln!("{label}: warm-up, {WARMUP} events");
    let warm = throughput(shop, &format!("{label}-warmup"), WARMUP, args.publishers).await?;
    if !warm.complete() {
        let why = warm.errors.first.as_deref().unwrap_or("no error reported");
        return Err(format!("{label}: the warm-up delivered {} of {WARMUP} events ({why})", warm.sent));
    }
    eprintln!("{label}: {events} events as fast as the bus takes them, {} publishers", args.publishers);
    let burst = throughput(shop, &format!("{label}-burst"), events, args.publishers).await?;
    let sample = sample(&shop.db).await?;
    eprintln!("{label}: {rate} events/s for {} s", args.seconds);
    let latency = steady(shop, &format!("{label}-steady"), rate, args.seconds).await?;
    Ok((burst, sample, latency))
}

// The references

/// A reference loop: messages done in how long.
struct Reference {
    messages: usize,
    secs: f64,
    done: usize,
    errors: Errors,
}

impl Reference {
    fn per_sec(&self) -> f64 {
        self.done as f64 / self.secs.max(1e-9)
    }
}

/// The storage floor: per message, the rendered row into `deliveries`, the
/// copy into `mailbox`, and the row marked `sent`, each autocommitted, from
/// `tasks` tasks, on a freshly migrated notify database apart from the shops'.
async fn storage_floor(place: &Place, options: &DbOptions, from: &str, sample: Sample, messages: usize, tasks: usize) -> Result<Reference, String> {
    let db = Db::connect(&place.url("reference", notify::NAME), notify::NAME, options).await.map_err(err)?;
    migrate::migrate(&db, &[&PLATFORM, &notify::MIGRATIONS]).await.map_err(err)?;
    let floor = Arc::new(Floor { db: db.clone(), from: from.to_owned(), sample });
    let one = |tag: &'static str| {
        let floor = floor.clone();
        move |n: usize| {
            let floor = floor.clone();
            async move { floor.store(tag, n).await }
        }
    };
    let (_, warm) = in_tasks(WARMUP, tasks, one("warmup")).await?;
    if let Some(e) = warm.first {
        db.close().await;
        return Err(format!("storage floor, warm-up: {e}"));
    }
    let started = Instant::now();
    let result = in_tasks(messages, tasks, one("floor")).await;
    let secs = started.elapsed().as_secs_f64();
    db.close().await;
    let (done, errors) = result?;
    Ok(Reference { messages, secs, done, errors })
}

struct Floor {
    db: Db,
    from: String,
    sample: Sample,
}

impl Floor {
    async fn store(&self, tag: &str, n: usize) -> Result<(), String> {
        let (db, s) = (&self.db, &self.sample);
        let id = NotificationId::new().to_string();
        let mail = MailId::new().to_string();
        let event = format!("evt_{tag}_{n}");
        let dedupe = format!("{event}:{TEMPLATE}");
        let user = format!("usr_bench_{tag}_{n}");
        let recipient = format!("bench-{tag}-{n}@example.com");
        let now = now_ms();
        on_write!(db, pool => sqlx::query(FLOOR_DELIVERY)
            .bind(&id).bind(&dedupe).bind(&event).bind(EVENT).bind(TEMPLATE).bind(&recipient).bind(&user)
            .bind(&s.subject).bind(&s.body).bind(&s.html).bind(now)
            .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(|e| format!("insert delivery: {e}"))?;
        let headers = json!({"From": self.from, "To": recipient, "Subject": s.subject, "Message-ID": format!("<{id}@mailbox.invalid>")});
        let headers = headers.to_string();
        on_write!(db, pool => sqlx::query(FLOOR_MAIL)
            .bind(&mail).bind(&id).bind(&self.from).bind(&recipient).bind(&s.subject).bind(&s.body).bind(&s.html)
            .bind(&headers).bind(now_ms())
            .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(|e| format!("insert mail: {e}"))?;
        let updated = on_write!(db, pool => sqlx::query(FLOOR_SENT).bind(&mail).bind(now_ms()).bind(&id)
            .execute(pool).await.map(|r| r.rows_affected()))
        .map_err(|e| format!("mark sent: {e}"))?;
        if updated == 1 { Ok(()) } else { Err(format!("mark sent: touched {updated} rows")) }
    }
}

/// The same messages (subject, text and HTML of the pipeline's, multipart/
/// alternative) sent straight to the SMTP server with lettre's pooled async
/// transport, built as the SMTP channel builds it, from `tasks` tasks.
async fn smtp_direct(url: &str, from: &str, sample: Sample, messages: usize, tasks: usize) -> Result<Reference, String> {
    let transport: AsyncSmtpTransport<Tokio1Executor> = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map_err(|e| format!("{url}: {e}"))?
        .timeout(Some(Duration::from_secs(20)))
        .build();
    let from = from.parse::<Mailbox>().map_err(|e| format!("`{from}` is not an address: {e}"))?;
    let domain = from.email.domain().to_owned();
    let mailer = Arc::new(Direct { transport, from, domain, sample });
    let one = |tag: &'static str| {
        let mailer = mailer.clone();
        move |n: usize| {
            let mailer = mailer.clone();
            async move { mailer.send(tag, n).await }
        }
    };
    let (_, warm) = in_tasks(WARMUP, tasks, one("direct-warmup")).await?;
    if let Some(e) = warm.first {
        return Err(format!("lettre, warm-up: {e}"));
    }
    let started = Instant::now();
    let (done, errors) = in_tasks(messages, tasks, one("direct")).await?;
    Ok(Reference { messages, secs: started.elapsed().as_secs_f64(), done, errors })
}

struct Direct {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    domain: String,
    sample: Sample,
}

impl Direct {
    async fn send(&self, tag: &str, n: usize) -> Result<(), String> {
        let to = format!("bench-{tag}-{n}@example.com").parse::<Mailbox>().map_err(err)?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(self.sample.subject.clone())
            .message_id(Some(format!("<{}@{}>", NotificationId::new(), self.domain)));
        let message = match &self.sample.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(self.sample.body.clone(), html.clone())),
            None => builder.singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(self.sample.body.clone())),
        }
        .map_err(err)?;
        self.transport.send(message).await.map(|_| ()).map_err(err)
    }
}

// The SMTP sink

/// The notify tests' aiosmtpd sink: its port and the folder it writes each message to.
struct Sink {
    port: u16,
    dir: PathBuf,
    child: tokio::process::Child,
}

/// Starts `crates/emporium/tests/support/smtp_sink.py`, or says why it cannot.
async fn start_sink(place: &Place) -> Result<Sink, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("crates/emporium/tests/support/smtp_sink.py");
    if !script.is_file() {
        return Err(format!("{} is missing", script.display()));
    }
    let deps = root.join(".ci/.pydeps");
    let pythonpath = match std::env::var("PYTHONPATH") {
        Ok(p) if !p.is_empty() => format!("{p}:{}", deps.display()),
        _ => deps.display().to_string(),
    };
    let usable = std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .env("PYTHONPATH", &pythonpath)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !usable {
        return Err("python3 with aiosmtpd is not available (pip install aiosmtpd, or run .ci/run to fill .ci/.pydeps)".into());
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(err)?.port();
    let dir = place.dir.join("smtp-sink");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut child = tokio::process::Command::new("python3")
        .arg(&script)
        .args(["--port", &port.to_string(), "--dir"])
        .arg(&dir)
        .env("PYTHONPATH", &pythonpath)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("python3: {e}"))?;
    let stdout = child.stdout.take().ok_or("the sink has no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
        Ok(Ok(Some(line))) if line.trim() == "ready" => Ok(Sink { port, dir, child }),
        Ok(Ok(line)) => Err(format!("the sink said {line:?} instead of `ready`")),
        Ok(Err(e)) => Err(format!("reading the sink: {e}")),
        Err(_) => Err("the sink was not ready within 30 s".into()),
    }
}

/// Messages the sink stored (one JSON file each).
fn stored_messages(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "json")).count())
}

// The result

struct SmtpMeasured {
    throughput: Throughput,
    latency: Latency,
    direct: Reference,
    stored: usize,
    expected: usize,
}

enum SmtpPart {
    Measured(Box<SmtpMeasured>),
    Skipped(String),
}

struct Measured {
    concurrency: usize,
    pool: u32,
    mailbox: Throughput,
    mailbox_latency: Latency,
    floor: Reference,
    smtp: SmtpPart,
}

impl Measured {
    /// Every event became one message that was sent (and, over SMTP, stored once).
    fn verdict(&self) -> Result<(), String> {
        let mut short = Vec::new();
        if !self.mailbox.complete() {
            short.push("dev mailbox burst");
        }
        if !self.mailbox_latency.complete() {
            short.push("dev mailbox steady rate");
        }
        if self.floor.errors.count > 0 {
            short.push("storage floor");
        }
        if let SmtpPart::Measured(s) = &self.smtp {
            if !s.throughput.complete() {
                short.push("SMTP burst");
            }
            if !s.latency.complete() {
                short.push("SMTP steady rate");
            }
            if s.direct.errors.count > 0 {
                short.push("lettre reference");
            }
            if s.stored != s.expected {
                short.push("messages the sink stored");
            }
        }
        if short.is_empty() { Ok(()) } else { Err(format!("not every message went through: {}", short.join(", "))) }
    }
}

// The Markdown

fn none() -> String {
    "-".into()
}

/// The nearest-rank percentile of sorted milliseconds.
fn percentile(sorted: &[i64], p: f64) -> String {
    if sorted.is_empty() {
        return none();
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(rank.min(sorted.len() - 1)).map_or_else(none, i64::to_string)
}

fn throughput_table(title: &str, t: &Throughput, r: &Reference, what: &str) -> String {
    let mut out = table(title, &[
        row("events/s, first publish to all sent", num(t.per_sec(), 0), format!("{} ({what})", num(r.per_sec(), 0)), ratio(t.per_sec(), r.per_sec())),
        row("seconds", num(t.secs, 2), num(r.secs, 2), ratio(t.secs, r.secs)),
        row("events/s through the bus (published and queued)", num(t.publish_per_sec(), 0), none(), none()),
        row("sent", format!("{} of {}", t.sent, t.events), format!("{} of {}", r.done, r.messages), none()),
        row("errors", t.errors.count.to_string(), r.errors.count.to_string(), none()),
    ]);
    out += &first_error("pipeline", &t.errors.first);
    out += &first_error("reference", &r.errors.first);
    out
}

fn latency_table(title: &str, l: &Latency) -> String {
    let mut out = table(&format!("{title} ({} events/s for {} s)", l.rate, l.seconds), &[
        row("events/s published", num(l.achieved, 0), none(), none()),
        row("event to queued p50 ms", percentile(&l.queued, 50.0), none(), none()),
        row("event to queued p99 ms", percentile(&l.queued, 99.0), none(), none()),
        row("event to sent p50 ms", percentile(&l.delivered, 50.0), none(), none()),
        row("event to sent p99 ms", percentile(&l.delivered, 99.0), none(), none()),
        row("event to sent max ms", l.delivered.last().map_or_else(none, i64::to_string), none(), none()),
        row("sent", format!("{} of {}", l.sent, l.published), none(), none()),
        row("errors", l.errors.count.to_string(), none(), none()),
    ]);
    out += &first_error("steady rate", &l.errors.first);
    out
}

fn render(args: &Args, place: &Place, m: &Measured) -> String {
    let (kind, database) = match &place.admin {
        Some(url) => ("PostgreSQL", format!("PostgreSQL at {} (fresh databases made and dropped by the run)", mask_url(url))),
        None => ("SQLite", "SQLite, one file per shop and one for the reference, in a fresh folder".to_owned()),
    };
    let mut out = format!(
        "\n## Notifications on {kind}\n\nWritten by `notify-bench`: a shop started in process with only the notify service \
         (`App::start` with `notify::spec()`: migrations, event consumer, sender, outbox relay; no HTTP listener), on the in-process bus \
         and the default `[notify]` settings, fed `user.password_reset_requested` events published straight onto its bus \
         (`EventBus::publish`), each for a user of its own. Each event is one email: the consumer renders it and queues it in \
         `deliveries` in the transaction that marks the event handled; the sender claims it, sends it and marks it `sent`. Every \
         shop and every reference first handles {WARMUP} messages unmeasured. Nothing is pinned (publishers, shop, database and SMTP \
         sink share the machine).\n\n"
    );
    out += &format!("- Machine: {}\n- Database: {database}\n", machine());
    out += &format!(
        "- Sender: {} messages at once (`notify.concurrency`), at most {} claimed per pass; {} database connections; the bursts are published from {} concurrent tasks\n",
        m.concurrency,
        m.concurrency * 4,
        m.pool,
        args.publishers
    );
    out += &format!(
        "- Reference, dev mailbox: the storage floor: per message, one INSERT of the rendered row into `deliveries`, one INSERT into \
         `mailbox` and one UPDATE of the row to `sent`, each autocommitted, from {} tasks, on a freshly migrated notify database of the \
         same kind kept apart from the shop's; no bus, no rendering, no claiming, no attempt log\n",
        m.concurrency
    );
    match &m.smtp {
        SmtpPart::Measured(_) => {
            out += &format!(
                "- Reference, SMTP: the same message (the pipeline's subject, text and HTML, multipart/alternative) sent straight to the \
                 same server with lettre's pooled `AsyncSmtpTransport<Tokio1Executor>`, built as the SMTP channel builds it, from {} tasks; \
                 no queue, no database. The server is the notify tests' sink (`crates/emporium/tests/support/smtp_sink.py`, aiosmtpd) on \
                 loopback, without TLS or AUTH\n",
                m.concurrency
            );
        }
        SmtpPart::Skipped(why) => out += &format!("- SMTP: not measured ({why})\n"),
    }
    out += &throughput_table(
        &format!("Throughput to the dev mailbox ({} events, published as fast as the bus takes them)", m.mailbox.events),
        &m.mailbox,
        &m.floor,
        "storage floor",
    );
    out += &latency_table("Event to delivery at a steady rate, dev mailbox", &m.mailbox_latency);
    if let SmtpPart::Measured(s) = &m.smtp {
        out += &throughput_table(
            &format!("Throughput over SMTP ({} events, published as fast as the bus takes them)", s.throughput.events),
            &s.throughput,
            &s.direct,
            "lettre, straight",
        );
        out += &format!(
            "\nMessages the sink stored over all the SMTP runs: {} (every message sent and acknowledged: {}).\n",
            s.stored, s.expected
        );
        out += &latency_table("Event to delivery at a steady rate, SMTP", &s.latency);
    }
    out += "\nRatios are Emporium ÷ reference: events/s, higher is better; seconds, lower is better. The pipeline's clock runs from the \
            first publish to the first 20 ms poll that finds every message `sent`. Latencies come from millisecond clocks: the wall \
            clock when the event was published against the row's `created_ms` (queued) and `sent_ms` (sent).\n";
    out += "\nWhat limits it: each message costs the pipeline four write transactions on the notify database (the consumer's, which \
            marks the event handled and queues the row; the sender's claim, one UPDATE and a re-read per row; the dev mailbox's insert or \
            the SMTP exchange; the attempt log with the status) and two reads (the staff template, the claim's batch), against the \
            floor's three autocommitted writes; on SQLite all of them queue for the one write lock. The sender claims at most four times \
            its concurrency per pass and finishes the pass before it claims more.";
    if matches!(m.smtp, SmtpPart::Measured(_)) {
        out += " Over SMTP the sink is one Python process that parses every message with `email` and writes it to a JSON file before \
                it answers; lettre's straight loop meets the same sink, so the SMTP ratio is the pipeline's cost on top of it.";
    }
    out += "\n";
    out
}
